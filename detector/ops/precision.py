"""The precision spconv's CUDA kernels run in, under each Lightning ``trainer.precision``.

spconv 2.3.8 decorates its autograd functions with ``custom_fwd(cast_inputs=torch.float16)`` for CUDA:
under *any* CUDA autocast its convolutions cast their inputs to float16, also under ``bf16-mixed``,
where Lightning runs no ``GradScaler``, so that small float16 gradients in its backward would flush
to zero. It has no bfloat16 kernels. And under ``32-true`` it runs its plain float32 GEMMs unless
``spconv.constants.SPCONV_ALLOW_TF32`` is set (torch's own matmul/cuDNN flags do not reach it).

The policy applied by the sparse-convolution layers (``detector.ops.sparse_conv``) on CUDA:

- float16 autocast (``16-mixed``, with Lightning's ``GradScaler``): spconv's own float16 cast;
- bfloat16 autocast (``bf16-mixed``): spconv in float32 (TF32 where allowed), autocast off inside it,
  the other layers (linear heads, point MLPs) in bfloat16 as autocast makes them;
- no autocast: float32, or TF32 with :func:`allow_tf32` (the ``tf32`` key of the entry-point configs).

The CPU layers are the project's own (float32 kernels, unaffected by CPU autocast, which leaves sparse
convolutions alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["spconv_cuda_dtype", "allow_tf32", "tf32_allowed"]


def spconv_cuda_dtype(autocast_enabled: bool, autocast_dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype a CUDA sparse convolution runs in under the given CUDA autocast state: ``None`` when
    spconv's own handling is right (no autocast: the features' dtype; float16 autocast: float16),
    ``torch.float32`` when autocast must be turned off around it (bfloat16 or any other autocast dtype
    that spconv would silently turn into float16 without a scaler)."""
    if not autocast_enabled or autocast_dtype == torch.float16:
        return None
    return torch.float32


def current_spconv_cuda_dtype() -> torch.dtype | None:
    """:func:`spconv_cuda_dtype` of the current CUDA autocast state."""
    enabled = torch.is_autocast_enabled("cuda")
    return spconv_cuda_dtype(enabled, torch.get_autocast_dtype("cuda") if enabled else None)


def tf32_allowed() -> bool:
    """Whether spconv's float32 kernels may use TF32 now."""
    from spconv import constants

    return bool(constants.SPCONV_ALLOW_TF32)


@contextlib.contextmanager
def allow_tf32(enabled: bool | None) -> Iterator[None]:
    """TF32 for spconv's float32 CUDA GEMMs, torch's float32 matmuls and cuDNN inside the block (``None``:
    unchanged); the previous settings after it. TF32 multiplies with a 10-bit mantissa and adds in float32:
    on Ampere and later GPUs it runs the float32 path on tensor cores. No effect on the CPU."""
    if enabled is None:
        yield
        return
    from spconv import constants

    before = (constants.SPCONV_ALLOW_TF32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    constants.SPCONV_ALLOW_TF32 = bool(enabled)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        constants.SPCONV_ALLOW_TF32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
