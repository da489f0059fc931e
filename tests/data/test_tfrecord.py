"""TFRecord framing and CRC-32C: known values, the vectorised CRC against the byte-serial definition,
round trips, and corruption/truncation reported with the file and byte offset."""

import struct

import numpy as np
import pytest

from detector.data import tfrecord
from detector.data.tfrecord import (RecordError, TFRecordWriter, _crc_register_serial, crc32c, crc32c_numpy,
                                    encode_record, iter_records, iter_records_with_offsets, masked_crc32c,
                                    write_tfrecord)


def _serial_crc(data: bytes) -> int:
    return _crc_register_serial(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


@pytest.mark.parametrize("fn", [crc32c, crc32c_numpy], ids=["default", "numpy"])
def test_crc32c_known_values(fn):
    # Standard check value of CRC-32C, and RFC 3720 (iSCSI) test vectors.
    assert fn(b"123456789") == 0xE3069283
    assert fn(bytes(32)) == 0x8A9136AA
    assert fn(b"\xff" * 32) == 0x62A8AB43
    assert fn(bytes(range(32))) == 0x46DD794E
    assert fn(b"") == 0


@pytest.mark.parametrize("n", [1, 4, 1023, 1024, 1029, 4096, 65535, 65536, 65541, 300_007])
def test_vectorised_crc_equals_serial_definition(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c_numpy(data) == _serial_crc(data)
    assert crc32c(data) == _serial_crc(data)
    # every buffer type the reader and writer pass
    assert crc32c(bytearray(data)) == crc32c(memoryview(data)) == crc32c(data)
    assert crc32c(memoryview(data)[: n // 2 + 1]) == crc32c_numpy(data[: n // 2 + 1])


def test_hardware_crc_is_used_where_installed():
    """google-crc32c is a declared dependency: with its C extension present, ``crc32c`` is that one."""
    google_crc32c = pytest.importorskip("google_crc32c")
    if google_crc32c.implementation != "c":
        pytest.skip("google-crc32c without its C extension: the numpy version is used")
    assert tfrecord.CRC32C_BACKEND == "google-crc32c (c)"
    assert crc32c is not crc32c_numpy


def test_record_framing_layout():
    rec = encode_record(b"hello")
    assert len(rec) == 8 + 4 + 5 + 4
    assert struct.unpack("<Q", rec[:8])[0] == 5 and rec[12:17] == b"hello"
    crc = crc32c(b"hello")
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert struct.unpack("<I", rec[17:])[0] == masked == masked_crc32c(b"hello")
    assert struct.unpack("<I", rec[8:12])[0] == masked_crc32c(rec[:8])


def test_round_trip_and_offsets(tmp_path):
    rng = np.random.default_rng(0)
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 7, 5000, 70_000)]
    path = tmp_path / "a.tfrecord"
    assert write_tfrecord(path, records) == 4
    assert list(iter_records(path)) == records
    offsets = [o for o, _ in iter_records_with_offsets(path)]
    assert offsets == [0, 16, 16 + 16 + 7, 16 + 16 + 7 + 16 + 5000]
    assert [p.name for p in tmp_path.iterdir()] == ["a.tfrecord"]  # no temporary file left


def test_writer_aborted_leaves_nothing(tmp_path):
    path = tmp_path / "b.tfrecord"
    with pytest.raises(RuntimeError):
        with TFRecordWriter(path) as w:
            w.write(b"x" * 10)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _three_records(tmp_path):
    path = tmp_path / "c.tfrecord"
    write_tfrecord(path, [b"a" * 100, b"b" * 2000, b"c" * 50])
    return path, bytearray(path.read_bytes())


def test_data_corruption_names_file_and_offset(tmp_path):
    path, raw = _three_records(tmp_path)
    second = 16 + 100
    raw[second + 12 + 700] ^= 0x01  # one bit in the data of record 2
    path.write_bytes(bytes(raw))
    it = iter_records(path)
    assert next(it) == b"a" * 100
    with pytest.raises(RecordError) as e:
        next(it)
    assert e.value.offset == second and e.value.path == str(path)
    assert str(path) in str(e.value) and f"byte offset {second}" in str(e.value)
    assert "data CRC" in str(e.value)


def test_length_corruption_detected(tmp_path):
    path, raw = _three_records(tmp_path)
    raw[16 + 100 + 1] ^= 0x40  # length field of record 2
    path.write_bytes(bytes(raw))
    with pytest.raises(RecordError, match="length CRC") as e:
        list(iter_records(path))
    assert e.value.offset == 116


@pytest.mark.parametrize("cut", [3, 12, 500, 2014])
def test_truncation_detected(tmp_path, cut):
    path, raw = _three_records(tmp_path)
    second = 16 + 100
    path.write_bytes(bytes(raw[: second + cut]))
    with pytest.raises(RecordError, match="truncated") as e:
        list(iter_records(path))
    assert e.value.offset == second and str(path) in str(e.value)
