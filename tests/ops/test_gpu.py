"""CUDA path: the project's sparse convolutions are spconv's own there, and match dense convolutions.
The detector on CUDA: tests/models/test_gpu.py. Skipped without CUDA (marker ``gpu``)."""

from __future__ import annotations

import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

from detector import ops

pytestmark = pytest.mark.gpu

SHAPE = (17, 19, 21)
B, CIN, COUT = 2, 8, 16


@pytest.fixture(autouse=True)
def _no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _grid(seed: int):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand((B, *SHAPE), generator=gen) < 0.2
    idx = mask.nonzero().int().contiguous().cuda()
    feats = torch.randn(len(idx), CIN, generator=gen).cuda()
    return idx, feats


def _dense(idx, feats, channels):
    i = idx.long()
    g = feats.new_zeros((B, *SHAPE, channels)).index_put((i[:, 0], i[:, 1], i[:, 2], i[:, 3]), feats)
    return g.permute(0, 4, 1, 2, 3)


def _order(idx):
    """Row order that sorts sites by (batch, z, y, x)."""
    i = idx.long()
    key = ((i[:, 0] * SHAPE[0] + i[:, 1]) * SHAPE[1] + i[:, 2]) * SHAPE[2] + i[:, 3]
    return torch.argsort(key)


def _at(dense, idx):
    i = idx.long()
    return dense.permute(0, 2, 3, 4, 1)[i[:, 0], i[:, 1], i[:, 2], i[:, 3]]


@pytest.mark.parametrize("kind", ["subm", "strided"])
def test_cuda_layers_are_spconv_and_match_dense(kind):
    idx, feats = _grid(1)
    if kind == "subm":
        ours, theirs = (ops.SubMConv3d(CIN, COUT, 3, bias=False).cuda(),
                        spconv.SubMConv3d(CIN, COUT, 3, bias=False).cuda())
        kw = dict(padding=1)
    else:
        ours = ops.SparseConv3d(CIN, COUT, 3, stride=2, padding=1, bias=False).cuda()
        theirs = spconv.SparseConv3d(CIN, COUT, 3, stride=2, padding=1, bias=False).cuda()
        kw = dict(stride=2, padding=1)
    theirs.weight.data.copy_(ours.weight.data)
    x = spconv.SparseConvTensor(feats, idx, list(SHAPE), B)
    a, b = ours(x), theirs(x)
    # spconv's CUDA rule book orders strided outputs by a hash table: compare site by site
    oa, ob = _order(a.indices), _order(b.indices)
    assert torch.equal(a.indices[oa], b.indices[ob]), "CUDA path must be plain spconv"
    assert torch.equal(a.features[oa], b.features[ob]), "CUDA path must be plain spconv"
    ref = _at(F.conv3d(_dense(idx, feats, CIN), ours.weight.permute(0, 4, 1, 2, 3), **kw), a.indices)
    assert (a.features - ref).abs().max().item() < 1e-3
