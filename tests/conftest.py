"""Shared pytest fixtures and marker handling."""

import os

import pytest
import torch

# Tests are seeded and run the real parts on small data.
os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run wherever torch sees CUDA (the default selection, ``-m "not slow"``, keeps
    them) and are skipped, not deselected, without it. The marker is read from the test, not from its
    keywords: those hold every parent's name, a checkout folder called ``gpu`` included."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a machine whose cores are all busy, torch's OpenMP regions in small
    ``index_add_`` calls can spin for milliseconds each; such tests check results, not speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
