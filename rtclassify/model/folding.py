"""Export-time rewrite of a trained TripleInputCNN into the same function with fewer operations.

At batch 1 on a CPU the network's time is mostly per-operation overhead, not arithmetic, so the
exported model computes exactly the trained network's outputs (to float rounding) with fewer,
larger operations:

- Each eval-mode BatchNorm is a per-channel affine map `a * x + b`. It is folded into the next
  convolution: `conv(a * x + b)` = `conv_{W * a}(x)` + a constant (C_out, L) map, the map holding
  the conv bias plus the conv of `b` over the unpadded positions (exact at the zero-padded edges).
  Through a max-pool only when every `a > 0` (max commutes with an increasing map); otherwise the
  BatchNorm is applied before the pool as it is. The last BatchNorm of each branch goes through
  the average pool into the dense layer.
- Convolutions run as 2-D convolutions on (N, C, 1, L) tensors: conv1d reshapes to 2-D on every
  call anyway.
- The real- and imaginary-part branches (same architecture, same length) run as one branch with
  block-diagonal weights: twice the multiply-adds of those layers, half the operations.

The training code keeps the plain `TripleInputCNN`; only the exported file holds this form
(trainer/export.py), and `tests/test_fold.py` holds it to the original network.
"""
from typing import List

import torch
from torch import nn
from torch.nn import functional as F

from rtclassify.model.inputs import compute_spectrum
from rtclassify.model.network import POOLED_LENGTH, TripleInputCNN, WindowNetwork


def batchnorm_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as (scale, shift), each (C,): bn(x) = scale * x + shift per channel."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


def parse_branch(branch: nn.Sequential) -> list[tuple[nn.Conv1d, nn.BatchNorm1d, bool]]:
    """(conv, batch-norm, max-pooled after) per layer of a branch built by model.build_branch."""
    layers = []
    for m in branch:
        if isinstance(m, nn.Conv1d):
            layers.append([m, None, False])
        elif isinstance(m, nn.BatchNorm1d):
            layers[-1][1] = m
        elif isinstance(m, nn.MaxPool1d):
            layers[-1][2] = True
    return [tuple(x) for x in layers]


class FoldedLayers:
    """One branch as folded layers; lists of (C_out, C_in, 1, k) weights and (C_out, 1, L) bias maps.

    pre_pool[i]: an affine (scale, shift), each (C, 1, 1), applied after layer i's ReLU and
    before its pool, when its BatchNorm could not be carried through the pool; otherwise None.
    `last` is the (scale, shift) of the final BatchNorm, still to be applied (by the dense layer).
    """

    def __init__(self, branch: nn.Sequential, length: int):
        self.weights, self.maps, self.pools, self.pre_pool = [], [], [], []
        pending = None  # (scale, shift) of a BatchNorm not yet applied
        for conv, bn, pooled in parse_branch(branch):
            w, bias = conv.weight.detach(), conv.bias.detach()
            pad = conv.padding[0]
            if pending is None:
                bias_map = bias[:, None].expand(-1, length)
            else:
                scale, shift = pending
                # conv of the shift alone, zero-padded like the real input: the edges see less of it
                bias_map = F.conv1d(shift[None, :, None].expand(1, -1, length), w, bias, padding=pad)[0]
                w = w * scale[None, :, None]
            self.weights.append(w.unsqueeze(2).clone())
            self.maps.append(bias_map.unsqueeze(1).clone())
            scale, shift = batchnorm_affine(bn)
            if pooled and not bool((scale > 0).all()):
                self.pre_pool.append((scale[:, None, None].clone(), shift[:, None, None].clone()))
                pending = None
            else:
                self.pre_pool.append(None)
                pending = (scale, shift)
            self.pools.append(pooled)
            length = length // 2 if pooled else length
        if pending is None:  # the last layer's BatchNorm was applied before its pool
            c = self.weights[-1].shape[0]
            pending = (torch.ones(c), torch.zeros(c))
        self.last = pending
        self.padding = self.weights[0].shape[-1] // 2


def block_diagonal(a: FoldedLayers, b: FoldedLayers) -> FoldedLayers:
    """Two folded branches of the same architecture and length as one: channels of `a` first."""
    out = FoldedLayers.__new__(FoldedLayers)
    out.weights, out.maps = [], []
    for wa, wb, ma, mb in zip(a.weights, b.weights, a.maps, b.maps):
        (oa, ia), (ob, ib) = wa.shape[:2], wb.shape[:2]
        w = torch.zeros(oa + ob, ia + ib, *wa.shape[2:])
        w[:oa, :ia], w[oa:, ia:] = wa, wb
        out.weights.append(w)
        out.maps.append(torch.cat([ma, mb]))
    out.pools = list(a.pools)
    out.pre_pool = []
    for pa, pb, wa, wb in zip(a.pre_pool, b.pre_pool, a.weights, b.weights):
        if pa is None and pb is None:
            out.pre_pool.append(None)
            continue
        ones = [(torch.ones(w.shape[0], 1, 1), torch.zeros(w.shape[0], 1, 1)) for w in (wa, wb)]
        pa, pb = pa or ones[0], pb or ones[1]
        out.pre_pool.append((torch.cat([pa[0], pb[0]]), torch.cat([pa[1], pb[1]])))
    out.last = (torch.cat([a.last[0], b.last[0]]), torch.cat([a.last[1], b.last[1]]))
    out.padding = a.padding
    return out


class FoldedBranch(nn.Module):
    """A branch of folded layers: (N, C_in, 1, L) -> (N, C * POOLED_LENGTH) pre-BatchNorm features."""

    pools: List[bool]
    scaled: List[bool]
    padding: int
    pooled_length: int

    def __init__(self, layers: FoldedLayers):
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(w, requires_grad=False) for w in layers.weights])
        self.maps = nn.ParameterList([nn.Parameter(m, requires_grad=False) for m in layers.maps])
        self.pools = list(layers.pools)
        self.scaled = [p is not None for p in layers.pre_pool]
        empty = torch.zeros(0)
        self.scales = nn.ParameterList([nn.Parameter(p[0] if p else empty, requires_grad=False)
                                        for p in layers.pre_pool])
        self.shifts = nn.ParameterList([nn.Parameter(p[1] if p else empty, requires_grad=False)
                                        for p in layers.pre_pool])
        self.padding = layers.padding
        self.pooled_length = POOLED_LENGTH

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        for w, m, scale, shift in zip(self.weights, self.maps, self.scales, self.shifts):
            x = torch.relu(F.conv2d(x, w, None, 1, (0, self.padding)) + m)
            if self.scaled[i]:
                x = torch.addcmul(shift, x, scale)
            if self.pools[i]:
                x = F.max_pool2d(x, (1, 2))
            i += 1
        return F.adaptive_avg_pool2d(x, (1, self.pooled_length)).flatten(1)


class FoldedCNN(WindowNetwork):
    """A TripleInputCNN folded for inference: (N, L) mV -> (N, K) class probabilities (softmax)."""

    fused_spectrum: torch.jit.Final[bool]

    def __init__(self, net: TripleInputCNN):
        super().__init__()
        net = net.eval()
        self.copy_input_settings(net)
        n_freq = net.n_samples // 2 + 1
        with torch.no_grad():
            time_layers = FoldedLayers(net.time_branch, net.n_samples)
            spectral = []
            if net.use_re:
                spectral.append(FoldedLayers(net.re_branch, n_freq))
            if net.use_im:
                spectral.append(FoldedLayers(net.im_branch, n_freq))
            self.fused_spectrum = len(spectral) == 2
            if self.fused_spectrum:
                spectral = [block_diagonal(spectral[0], spectral[1])]
            self.time_branch = FoldedBranch(time_layers)
            self.spectrum_branch = FoldedBranch(spectral[0]) if spectral else nn.Identity()
            # the branches' last BatchNorms, through the average pool, into the first dense layer
            lasts = [time_layers.last] + [s.last for s in spectral]
            scale = torch.cat([s.repeat_interleave(POOLED_LENGTH) for s, _ in lasts])
            shift = torch.cat([b.repeat_interleave(POOLED_LENGTH) for _, b in lasts])
            dense, out = net.head[0], net.classifier
            self.w1 = nn.Parameter((dense.weight * scale[None, :]).clone(), requires_grad=False)
            self.b1 = nn.Parameter((dense.bias + dense.weight @ shift).clone(), requires_grad=False)
            self.w2 = nn.Parameter(out.weight.detach().clone(), requires_grad=False)
            self.b2 = nn.Parameter(out.bias.detach().clone(), requires_grad=False)

    def forward(self, v_mv: torch.Tensor) -> torch.Tensor:
        """(N, L) membrane potential in mV at fs_hz -> (N, K) probabilities."""
        feats = [self.time_branch(self.time_inputs(v_mv).unsqueeze(2))]
        if self.use_re or self.use_im:
            re, im = compute_spectrum(v_mv)
            if self.fused_spectrum:
                spectrum = torch.stack([re, im], dim=1)
            else:
                spectrum = (re if self.use_re else im).unsqueeze(1)
            feats.append(self.spectrum_branch(spectrum.unsqueeze(2)))
        h = torch.relu(F.linear(torch.cat(feats, dim=1), self.w1, self.b1))  # dropout is off in eval
        return torch.softmax(F.linear(h, self.w2, self.b2), dim=1)
