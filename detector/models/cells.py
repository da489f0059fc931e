"""Recurrent cells over sparse tensors: the gates are sparse convolutions over ``[x_t, h_{t-1}]``.

All cells work on one set of sites (the union of the current voxels and the moved state); the
previous hidden/memory features come as the state's own rows and their places among those sites
(zeros where the state had no site).

- ``lstm``: i, f, o, g gates; c = f*c + i*g; h = o*tanh(c). Forget-gate bias initialised to 1.0.
- ``peephole``: LSTM whose i and f gates also see c_{t-1} and whose o gate sees c_t (per-channel
  weights, initialised to 0).
- ``coupled``: LSTM with coupled input and forget gates, i = 1 - f.
- ``gru``: z, r gates over [x, h]; candidate n = tanh(conv([x, r*h])); h = (1-z)*n + z*h; no memory.
"""

from __future__ import annotations

import torch
from spconv.pytorch import SparseConvTensor
from torch import nn

from detector.models.backbone import SparseUNet, SubMBlock
from detector.models.grid import scatter_rows
from detector.models.rulebooks import SITES_SUBM3
from detector.ops import SubMConv3d

__all__ = ["GateNet", "SparseRecurrentCell", "CELL_KINDS"]

CELL_KINDS = ("lstm", "peephole", "coupled", "gru")


class GateNet(nn.Module):
    """Sparse convolutions from ``in_channels`` to ``out_channels`` gate pre-activations.

    levels = 0: ``depth`` - 1 submanifold blocks (conv + BN + ReLU) then a final submanifold conv
    with bias; levels >= 1: a light sparse U-Net of that many levels then a final submanifold conv.
    The final convolution has no normalisation, so its bias sets the gates' initial values.
    ``subm_key`` names the 3x3x3 submanifold rule book on the fused sites: every net over the same
    sites shares it (computed once per frame); ``key`` names the U-Net's own down/up rule books.
    """

    def __init__(
        self, in_channels: int, out_channels: int, key: str, channels: int = 32, levels: int = 0, depth: int = 1,
        subm_key: str = SITES_SUBM3,
    ) -> None:
        super().__init__()
        if levels > 0:
            self.body: nn.Module = SparseUNet(
                in_channels, [channels * (2**i) for i in range(levels + 1)], blocks=1, key=f"{key}_unet"
            )
            c = channels
        else:
            blocks = [SubMBlock(in_channels if i == 0 else channels, channels, subm_key) for i in range(depth - 1)]
            self.body = nn.Sequential(*blocks)
            c = channels if depth > 1 else in_channels
        self.out = SubMConv3d(c, out_channels, 3, bias=True, indice_key=subm_key)

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        return self.out(self.body(x))

    def forward_rows(self, x: SparseConvTensor, rows: torch.Tensor, features: torch.Tensor) -> SparseConvTensor:
        """``forward`` on ``x``'s sites with ``features`` at ``rows`` and zeros elsewhere. A net that is one
        convolution computes only the pairs from those rows (``SubMConv3d.forward_rows``)."""
        if isinstance(self.body, nn.Sequential) and len(self.body) == 0:
            return self.out.forward_rows(x, rows, features)
        return self(x.replace_feature(scatter_rows(features, rows, x.indices.shape[0])))


class SparseRecurrentCell(nn.Module):
    """One recurrent layer of kind ``lstm`` | ``peephole`` | ``coupled`` | ``gru`` (see module doc).

    ``forward(x, h_prev, c_prev, rows)`` takes a ``SparseConvTensor`` x (U sites, in_channels), the
    previous hidden (S, H) / memory (S, H or None) and the rows (S,) of their sites among x's; returns
    ``(h, c, sites)`` (h, c on x's U sites) where
    ``sites`` is a ``SparseConvTensor`` carrying the rule books computed on these sites (reusable).

    input_kernel: 3 (default) runs the gate network over ``[x, h]``; 1 feeds ``x`` through a per-site
    linear layer added to the gate network's output over ``h`` alone (half the gate-conv cost; the
    backbone features already carry spatial context, the state keeps a spatial kernel so that it
    can follow objects that moved).
    """

    def __init__(
        self, kind: str, in_channels: int, hidden_channels: int, key: str, gate_channels: int = 32,
        gate_levels: int = 0, gate_depth: int = 1, forget_bias: float = 1.0, input_kernel: int = 3,
    ) -> None:
        super().__init__()
        if kind not in CELL_KINDS:
            raise ValueError(f"SparseRecurrentCell: unknown cell kind {kind!r}; expected one of {CELL_KINDS}")
        if input_kernel not in (1, 3):
            raise ValueError(f"SparseRecurrentCell: input_kernel must be 1 or 3, got {input_kernel}")
        self.kind = kind
        self.in_channels = int(in_channels)
        self.hidden_channels = h = int(hidden_channels)
        self.input_kernel = int(input_kernel)
        n_gates = {"lstm": 4, "peephole": 4, "coupled": 3, "gru": 2}[kind]
        net_in = h if input_kernel == 1 else in_channels + h
        self.gates = GateNet(net_in, n_gates * h, f"{key}_g", gate_channels, gate_levels, gate_depth)
        if input_kernel == 1:
            self.gates_x = nn.Linear(in_channels, n_gates * h, bias=False)
        if kind == "gru":
            self.candidate = GateNet(net_in, h, f"{key}_n", gate_channels, gate_levels, gate_depth)
            if input_kernel == 1:
                self.candidate_x = nn.Linear(in_channels, h, bias=False)
        if kind == "peephole":
            self.peep_i = nn.Parameter(torch.zeros(h))
            self.peep_f = nn.Parameter(torch.zeros(h))
            self.peep_o = nn.Parameter(torch.zeros(h))
        with torch.no_grad():
            bias = self.gates.out.bias
            if kind in ("lstm", "peephole"):  # order i, f, o, g
                bias[h : 2 * h].fill_(forget_bias)
            elif kind == "coupled":  # order f, o, g
                bias[:h].fill_(forget_bias)

    @property
    def has_memory(self) -> bool:
        return self.kind != "gru"

    def forward(
        self, x: SparseConvTensor, h_prev: torch.Tensor, c_prev: torch.Tensor | None, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, SparseConvTensor]:
        hc = self.hidden_channels
        xf = x.features
        u = xf.shape[0]
        c = None if c_prev is None else scatter_rows(c_prev, rows, u)
        h = None  # on x's sites, built where a gate needs it whole
        if self.input_kernel == 1:
            pre = self.gates.forward_rows(x, rows, h_prev)
            a = pre.features + self.gates_x(xf)
        else:
            h = scatter_rows(h_prev, rows, u)
            pre = self.gates(x.replace_feature(torch.cat([xf, h], dim=1)))
            a = pre.features
        if self.kind == "gru":
            h = scatter_rows(h_prev, rows, u) if h is None else h
            z, r = torch.sigmoid(a[:, :hc]), torch.sigmoid(a[:, hc:])
            if self.input_kernel == 1:
                n = self.candidate(pre.replace_feature(r * h)).features + self.candidate_x(xf)
            else:
                n = self.candidate(pre.replace_feature(torch.cat([xf, r * h], dim=1))).features
            n = torch.tanh(n)
            return (1 - z) * n + z * h, None, pre
        if c is None:
            raise ValueError(f"{self.kind} cell needs a memory tensor")
        if self.kind == "coupled":
            f = torch.sigmoid(a[:, :hc])
            o = torch.sigmoid(a[:, hc : 2 * hc])
            g = torch.tanh(a[:, 2 * hc :])
            c_new = f * c + (1 - f) * g
            return o * torch.tanh(c_new), c_new, pre
        ai, af, ao, ag = a.split(hc, dim=1)
        if self.kind == "peephole":
            ai = ai + self.peep_i * c
            af = af + self.peep_f * c
        i, f, g = torch.sigmoid(ai), torch.sigmoid(af), torch.tanh(ag)
        c_new = f * c + i * g
        if self.kind == "peephole":
            ao = ao + self.peep_o * c_new
        return torch.sigmoid(ao) * torch.tanh(c_new), c_new, pre
