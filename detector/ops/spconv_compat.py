"""Compatibility switch for spconv's own CPU kernels (used by benchmarks and tests as the baseline).

spconv 2.3.8 asks ``torch.cuda.current_stream()`` unconditionally in its backward, which raises
"Torch not compiled with CUDA enabled" on CPU-only torch. The project's layers do not use spconv's
CPU kernels at all (see ``sparse_conv.py``); this switch only lets spconv's native backward run so
that it can be measured and compared. It changes nothing when CUDA is available.
"""

from __future__ import annotations

import torch


def enable_spconv_cpu_backward() -> bool:
    """Make spconv's stream lookup return 0 (the CPU stream) when torch has no CUDA. Idempotent.

    Returns True when the patch is in effect.
    """
    if torch.cuda.is_available():
        return False
    from spconv.pytorch import cppcore, ops

    def _cpu_stream() -> int:
        return 0

    ops.get_current_stream = _cpu_stream
    cppcore.get_current_stream = _cpu_stream
    return True
