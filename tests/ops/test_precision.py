"""The precision policy of the sparse convolutions on CUDA (``detector.ops.precision``): the policy and
the TF32 switch here, the layers under a CUDA autocast in the ``gpu`` test below."""

import pytest
import torch

from detector.ops.precision import allow_tf32, spconv_cuda_dtype, tf32_allowed


def test_spconv_runs_float32_under_bf16_autocast_and_keeps_its_float16_cast():
    assert spconv_cuda_dtype(False, None) is None  # no autocast: the features' own dtype
    assert spconv_cuda_dtype(True, torch.float16) is None  # 16-mixed: spconv's float16, with the scaler
    assert spconv_cuda_dtype(True, torch.bfloat16) == torch.float32  # bf16-mixed: no float16 without a scaler


def test_allow_tf32_applies_inside_and_restores():
    before = (tf32_allowed(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with allow_tf32(not before[0]):
        assert tf32_allowed() is (not before[0])
        assert torch.backends.cuda.matmul.allow_tf32 is (not before[0])
        assert torch.backends.cudnn.allow_tf32 is (not before[0])
    assert (tf32_allowed(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with allow_tf32(None):
        assert tf32_allowed() == before[0]


def test_running_applies_the_tf32_key():
    from omegaconf import OmegaConf

    from detector.config import compose, running
    from detector.config_checks import TRAIN_CHECKS, ConfigValueError

    cfg = compose("train", ["tf32=true"])
    before = tf32_allowed()
    with running(cfg, TRAIN_CHECKS):
        assert tf32_allowed()
    assert tf32_allowed() == before
    OmegaConf.set_struct(cfg, False)
    cfg.tf32 = "yes"
    with pytest.raises(ConfigValueError, match="tf32"):
        with running(cfg, TRAIN_CHECKS):
            pass


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_sparse_conv_under_autocast(dtype):
    from spconv.pytorch import SparseConvTensor

    from detector.ops import SubMConv3d

    g = torch.Generator().manual_seed(0)
    idx = torch.unique(torch.randint(0, 16, (400, 3), generator=g), dim=0)
    idx = torch.cat([torch.zeros(len(idx), 1, dtype=torch.long), idx], 1).int().cuda()
    feats = torch.randn(len(idx), 8, generator=g).cuda().requires_grad_()
    conv = SubMConv3d(8, 16, 3, indice_key="k").cuda()
    ref = conv(SparseConvTensor(feats, idx, [16, 16, 16], 1)).features
    with torch.autocast("cuda", dtype=dtype):
        out = conv(SparseConvTensor(feats, idx, [16, 16, 16], 1)).features
    assert out.dtype == (torch.float16 if dtype == torch.float16 else torch.float32)
    assert torch.allclose(out.float(), ref, atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert torch.isfinite(feats.grad).all() and torch.isfinite(conv.weight.grad).all()
