"""Names of the spconv rule books (``indice_key``) the model's layers share, owned here alone.

spconv caches a layer's rule book on the sparse tensor under its ``indice_key``; a layer with the same
key on the same sites reuses it instead of recomputing it. Two kinds of names:

- ``SITES_SUBM3``: the 3x3x3 submanifold rule book of the sites a tensor holds now. Every network that
  runs after the backbone on one frame's sites (the recurrent gates, the head) uses it, so the rule
  book of those sites is computed once per frame.
- ``level_key(prefix, kind, level)``: the backbone's (and a gate U-Net's) own per-level books, e.g.
  ``unet_subm0`` for the full-resolution submanifold convs or ``unet_down1`` for a strided conv and its
  inverse.
"""

from __future__ import annotations

from spconv.pytorch import SparseConvTensor

__all__ = ["SITES_SUBM3", "level_key", "publish_sites_rule_book"]

SITES_SUBM3 = "fused_subm3"


def level_key(prefix: str, kind: str, level: int) -> str:
    """The rule-book name of level ``level``'s ``kind`` (``"subm"`` or ``"down"``) layers of a U-Net."""
    return f"{prefix}_{kind}{level}"


def publish_sites_rule_book(x: SparseConvTensor, key: str) -> SparseConvTensor:
    """Make the 3x3x3 submanifold rule book that ``x`` carries under ``key`` (computed on exactly the
    sites ``x`` holds) also the ``SITES_SUBM3`` book of ``x``, so that the next network reuses it."""
    if key in x.indice_dict and SITES_SUBM3 not in x.indice_dict:
        x.indice_dict[SITES_SUBM3] = x.indice_dict[key]
    return x
