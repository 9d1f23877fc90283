"""The triple-input 1-D CNN: voltage window, real FFT part and imaginary FFT part.

Each branch is a stack of Conv1d -> ReLU -> BatchNorm1d layers (max-pooled after every second
layer), average-pooled to a fixed length; the branch features are concatenated and classified by
dense layers. Branches are selectable so that the published ablations (raw only, raw + real FFT,
raw + imaginary FFT, all three) are reproducible; our default also feeds dV/dt to the time branch.

No `from __future__ import annotations` here: TorchScript needs real annotations.
"""
from typing import List, Tuple

import torch
from torch import nn

from rtclassify.model.inputs import (DVDT_SCALE_MV_PER_MS, V_OFFSET_MV, V_SCALE_MV, compute_dvdt, compute_spectrum,
                                 normalise_voltage)

BRANCH_INPUTS = ("v", "dvdt", "fft_re", "fft_im")
DEFAULT_BRANCHES = ("v", "dvdt", "fft_re", "fft_im")
PUBLISHED_BRANCHES = ("v", "fft_re", "fft_im")
POOLED_LENGTH = 4


def stack_time_inputs(v_mv: torch.Tensor, use_v: bool, use_dvdt: bool, fs_hz: float, v_offset_mv: float,
                      v_scale_mv: float, dvdt_scale: float) -> torch.Tensor:
    """(N, L) mV -> (N, C, L) time-branch channels: normalised V and/or scaled dV/dt."""
    time_inputs: List[torch.Tensor] = []
    if use_v:
        time_inputs.append(normalise_voltage(v_mv, v_offset_mv, v_scale_mv))
    if use_dvdt:
        time_inputs.append(compute_dvdt(v_mv, fs_hz, dvdt_scale))
    return torch.stack(time_inputs, dim=1)


def build_branch(in_channels: int, channels: int, depth: int, kernel: int) -> nn.Sequential:
    """Conv1d -> ReLU -> BatchNorm1d, `depth` times, max-pool /2 after every second layer.

    Input (N, in_channels, L) -> output (N, channels * POOLED_LENGTH).
    """
    layers: List[nn.Module] = []
    c = in_channels
    for i in range(depth):
        layers += [nn.Conv1d(c, channels, kernel, padding=kernel // 2), nn.ReLU(), nn.BatchNorm1d(channels)]
        if i % 2 == 1:
            layers.append(nn.MaxPool1d(2))
        c = channels
    layers += [nn.AdaptiveAvgPool1d(POOLED_LENGTH), nn.Flatten()]
    return nn.Sequential(*layers)


INPUT_SETTINGS = ("use_v", "use_dvdt", "use_re", "use_im", "n_samples", "fs_hz", "v_offset_mv", "v_scale_mv",
                  "dvdt_scale")


class WindowNetwork(nn.Module):
    """Base of the networks here: which inputs they use and how a window becomes those inputs.

    The settings are TorchScript constants (Final), so scripting prunes the unused branches.
    """

    use_v: torch.jit.Final[bool]
    use_dvdt: torch.jit.Final[bool]
    use_re: torch.jit.Final[bool]
    use_im: torch.jit.Final[bool]
    n_samples: torch.jit.Final[int]
    fs_hz: torch.jit.Final[float]
    v_offset_mv: torch.jit.Final[float]
    v_scale_mv: torch.jit.Final[float]
    dvdt_scale: torch.jit.Final[float]

    def copy_input_settings(self, other: "WindowNetwork") -> None:
        for name in INPUT_SETTINGS:
            setattr(self, name, getattr(other, name))

    def time_inputs(self, v_mv: torch.Tensor) -> torch.Tensor:
        """(N, L) mV -> (N, C, L) time-branch channels, after checking the input's shape."""
        if v_mv.dim() != 2 or v_mv.shape[1] != self.n_samples:
            raise ValueError("expected input of shape (N, " + str(self.n_samples) + ") in mV")
        return stack_time_inputs(v_mv, self.use_v, self.use_dvdt, self.fs_hz, self.v_offset_mv, self.v_scale_mv,
                                 self.dvdt_scale)


class TripleInputCNN(WindowNetwork):
    """Classifier of one action-potential window.

    Parameters
    ----------
    n_samples : window length L in samples at `fs_hz`.
    fs_hz : the window's sampling rate in Hz (used for dV/dt in mV/ms).
    n_classes : number of output classes K.
    branches : subset of BRANCH_INPUTS; "v" and/or "dvdt" feed the time branch as channels,
        "fft_re" and "fft_im" each get a branch of their own.
    channels, depth, kernel : width, number of conv layers and kernel size of each branch.
    hidden, dropout : size of the dense layer and its dropout.
    """

    def __init__(self, n_samples: int, fs_hz: float, n_classes: int, branches=DEFAULT_BRANCHES,
                 channels: int = 32, depth: int = 6, kernel: int = 5, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        unknown = set(branches) - set(BRANCH_INPUTS)
        if unknown:
            raise ValueError(f"unknown branches {sorted(unknown)}; valid: {list(BRANCH_INPUTS)}")
        if "v" not in branches and "dvdt" not in branches:
            raise ValueError(f"branches={list(branches)}: need 'v' or 'dvdt' for the time branch")
        if n_classes < 2:
            raise ValueError(f"n_classes={n_classes}: need at least 2")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel={kernel}: must be odd (the padding keeps the window's length)")
        n_freq = n_samples // 2 + 1
        n_pools = depth // 2
        if n_freq >> n_pools < 1 or n_samples < 8:
            raise ValueError(
                f"n_samples={n_samples} too small for depth={depth} ({n_pools} halvings); "
                "lengthen the window or reduce depth"
            )
        if fs_hz <= 0:
            raise ValueError(f"fs_hz={fs_hz}: must be positive")
        self.n_samples = int(n_samples)
        self.fs_hz = float(fs_hz)
        self.v_offset_mv = V_OFFSET_MV
        self.v_scale_mv = V_SCALE_MV
        self.dvdt_scale = DVDT_SCALE_MV_PER_MS
        self.use_v = "v" in branches
        self.use_dvdt = "dvdt" in branches
        self.use_re = "fft_re" in branches
        self.use_im = "fft_im" in branches
        time_channels = int(self.use_v) + int(self.use_dvdt)
        self.time_branch = build_branch(time_channels, channels, depth, kernel)
        self.re_branch = build_branch(1, channels, depth, kernel) if self.use_re else nn.Identity()
        self.im_branch = build_branch(1, channels, depth, kernel) if self.use_im else nn.Identity()
        n_branches = 1 + int(self.use_re) + int(self.use_im)
        self.head = nn.Sequential(
            nn.Linear(n_branches * channels * POOLED_LENGTH, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, v_mv: torch.Tensor) -> torch.Tensor:
        """(N, L) membrane potential in mV at fs_hz -> (N, K) logits."""
        feats = [self.time_branch(self.time_inputs(v_mv))]  # (N, C * 4)
        if self.use_re or self.use_im:
            re, im = compute_spectrum(v_mv)  # (N, F) each
            if self.use_re:
                feats.append(self.re_branch(re.unsqueeze(1)))
            if self.use_im:
                feats.append(self.im_branch(im.unsqueeze(1)))
        return self.classifier(self.head(torch.cat(feats, dim=1)))


class ProbabilityEnsemble(nn.Module):
    """Mean of the softmax outputs of several classifiers: (N, L) mV -> (N, K) probabilities."""

    def __init__(self, members: List[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, v_mv: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(0)
        n = 0
        for m in self.members:
            p = torch.softmax(m(v_mv), dim=1)
            total = p if n == 0 else total + p
            n += 1
        return total / float(n)


def exported_shape(architecture: dict) -> dict:
    """channels and depth of the network(s) in a model file, from its card's "architecture" (a
    distilled student may be narrower or shallower than the teachers its options describe)."""
    distilled = architecture.get("distil") and architecture.get("members", 1) > 1
    shape = {"channels": architecture["channels"], "depth": architecture["depth"]}
    if distilled:
        shape["channels"] = architecture.get("student_channels") or shape["channels"]
        shape["depth"] = architecture.get("student_depth") or shape["depth"]
    return shape


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def fuse_branch(branches: List[nn.Sequential]) -> nn.Sequential:
    """One branch computing M identical-architecture branches at once with grouped convolutions.

    Input (N, M * C_in, L) (member m's channels contiguous) -> (N, M * C * POOLED_LENGTH) with
    member m's features contiguous, bit-for-bit the same computation as the separate branches.
    """
    m = len(branches)
    layers: List[nn.Module] = []
    for parts in zip(*[list(b) for b in branches]):
        first = parts[0]
        if isinstance(first, nn.Conv1d):
            conv = nn.Conv1d(first.in_channels * m, first.out_channels * m, first.kernel_size[0],
                             padding=first.padding[0], groups=m)
            conv.weight.data = torch.cat([p.weight.data for p in parts], dim=0)
            conv.bias.data = torch.cat([p.bias.data for p in parts], dim=0)
            layers.append(conv)
        elif isinstance(first, nn.BatchNorm1d):
            bn = nn.BatchNorm1d(first.num_features * m, eps=first.eps)
            for name in ("weight", "bias"):
                getattr(bn, name).data = torch.cat([getattr(p, name).data for p in parts])
            for name in ("running_mean", "running_var"):
                getattr(bn, name).data = torch.cat([getattr(p, name).data for p in parts])
            layers.append(bn)
        else:  # ReLU, MaxPool1d, AdaptiveAvgPool1d, Flatten act per channel
            layers.append(first)
    return nn.Sequential(*layers)


class FusedEnsemble(WindowNetwork):
    """An ensemble of TripleInputCNNs evaluated as one network: (N, L) mV -> (N, K) mean probabilities.

    Same result as ProbabilityEnsemble of the same members, with one grouped convolution per layer
    instead of one per member (a handful of kernel launches instead of M times as many, which is
    what costs time at batch 1 on a CPU).
    """

    n_members: torch.jit.Final[int]

    def __init__(self, members: List[TripleInputCNN]):
        super().__init__()
        ref = members[0]
        shapes = [[tuple(p.shape) for p in m.parameters()] for m in members]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("ensemble members of different shapes (e.g. TrainConfig.member_options changing "
                             "channels or depth) cannot be fused into one network: distil them into a student "
                             "(TrainConfig.distil) or give them the same shape")
        self.n_members = len(members)
        self.copy_input_settings(ref)
        self.time_branch = fuse_branch([m.time_branch for m in members])
        self.re_branch = fuse_branch([m.re_branch for m in members]) if ref.use_re else nn.Identity()
        self.im_branch = fuse_branch([m.im_branch for m in members]) if ref.use_im else nn.Identity()
        # dense layers as batched matrices: (M, in, out)
        self.w1 = nn.Parameter(torch.stack([m.head[0].weight.data.t() for m in members]))
        self.b1 = nn.Parameter(torch.stack([m.head[0].bias.data for m in members]).unsqueeze(1))
        self.w2 = nn.Parameter(torch.stack([m.classifier.weight.data.t() for m in members]))
        self.b2 = nn.Parameter(torch.stack([m.classifier.bias.data for m in members]).unsqueeze(1))

    def forward(self, v_mv: torch.Tensor) -> torch.Tensor:
        """(N, L) membrane potential in mV -> (N, K) probabilities averaged over the members."""
        n = v_mv.shape[0]
        m = self.n_members
        x = self.time_inputs(v_mv).repeat(1, m, 1)  # (N, M * C_in, L)
        feats = [self.time_branch(x).reshape(n, m, -1)]  # (N, M, C * 4)
        if self.use_re or self.use_im:
            re, im = compute_spectrum(v_mv)
            if self.use_re:
                feats.append(self.re_branch(re.unsqueeze(1).repeat(1, m, 1)).reshape(n, m, -1))
            if self.use_im:
                feats.append(self.im_branch(im.unsqueeze(1).repeat(1, m, 1)).reshape(n, m, -1))
        h = torch.cat(feats, dim=2).transpose(0, 1)  # (M, N, F)
        h = torch.relu(torch.baddbmm(self.b1, h, self.w1))  # (M, N, hidden); dropout is off in eval
        logits = torch.baddbmm(self.b2, h, self.w2)  # (M, N, K)
        return torch.softmax(logits, dim=2).mean(dim=0)
