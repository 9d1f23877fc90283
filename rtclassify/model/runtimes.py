"""The CPU serving paths: the exported network run by ONNX Runtime, or as compiled kernels
(rtclassify.model.compiled, the daemon's default), whose per-call cost is close to the network's
arithmetic (TorchScript's interpreter costs ~0.4 ms per call back to back here and ~1.4 ms after a
pause, many times the ~1.2 M multiply-adds of the shipped genetic5). Both start from ServingCNN.

`ServingCNN` computes exactly the function of a folded network (rtclassify.model.folding.FoldedCNN, also
read back from a saved TorchScript file) with operations ONNX Runtime runs well:

- the spectrum (rfft of the mean-removed window / L, real and imaginary parts) as a matrix
  product with the window's DFT matrix, mean removal and scaling folded in;
- the fused real/imaginary branch's block-diagonal convolutions as 2-group convolutions;
- the branches' final adaptive average pools as products with a small pooling matrix.

The ONNX graph is written into the model file at export (`serving.onnx`, beside `card.json`) and
checked there and at every load against the TorchScript module on `verification_windows`: the
largest difference in any probability must be <= VERIFY_TOLERANCE, or the file is refused.
TorchScript stays the reference, and the path for CUDA.
"""
import io
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rtclassify.model.network import stack_time_inputs

SERVING_FILE = "serving.onnx"
# Largest |probability difference| a runtime may show against TorchScript. Derived from float32:
# eps is 1.19e-7, and the network's longest accumulations (DFT rows of 150 terms, convolutions of
# up to 32 channels x 7 taps, summed in a different order by each runtime and thread count) leave
# logit errors of ~1e-5 relative, i.e. probability errors up to ~1e-5 (measured: 2.0e-6 to 9.2e-6
# for the shipped models here on ONNX Runtime and the compiled kernels at 1 and 2 threads; 1.05e-5
# on another AMD EPYC host). 1e-4 (~840 float32 ulps at 1.0) leaves a 10x margin over that, and
# is still 100x below what a real fault (a wrong weight, layout or padding) moves: >= 1e-2.
VERIFY_TOLERANCE = 1e-4
ONNX_OPSET = 17


def read_branch(module, prefix: str) -> dict:
    """The layers of a FoldedBranch (eager or scripted) as plain tensors."""
    params = dict(module.named_parameters())
    n = len([k for k in params if k.startswith(f"{prefix}.weights.")])
    branch = getattr(module, prefix)
    return {"weights": [params[f"{prefix}.weights.{i}"].detach().clone() for i in range(n)],
            "maps": [params[f"{prefix}.maps.{i}"].detach().clone() for i in range(n)],
            "scales": [params[f"{prefix}.scales.{i}"].detach().clone() for i in range(n)],
            "shifts": [params[f"{prefix}.shifts.{i}"].detach().clone() for i in range(n)],
            "pools": list(branch.pools), "scaled": list(branch.scaled), "padding": int(branch.padding),
            "pooled_length": int(branch.pooled_length)}


def average_pool_matrix(length: int, out: int) -> torch.Tensor:
    """(length, out) matrix of adaptive_avg_pool1d(length -> out): x @ it pools the last axis."""
    p = torch.zeros(length, out)
    for j in range(out):
        a, b = (j * length) // out, -(-((j + 1) * length) // out)
        p[a:b, j] = 1.0 / (b - a)
    return p


def block_diagonal_halves(w: torch.Tensor) -> torch.Tensor | None:
    """(C_out, C_in / 2, 1, k) 2-group weights of a (C_out, C_in, 1, k) block-diagonal weight, or
    None when it is not exactly block-diagonal in two halves."""
    c_out, c_in = w.shape[0], w.shape[1]
    if c_out % 2 or c_in % 2:
        return None
    o, i = c_out // 2, c_in // 2
    if torch.count_nonzero(w[:o, i:]) or torch.count_nonzero(w[o:, :i]):
        return None
    return torch.cat([w[:o, :i], w[o:, i:]], 0).clone()


def split_bias_map(bias_map: torch.Tensor, kernel: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bias (C,), edge weights (C, k)) with bias_map[c, l] = bias[c] + sum_j edge[c, j] * [0 <= l + j - p < L].

    A folded layer's (C, 1, L) bias map is the conv bias plus the previous BatchNorm's shift seen
    through the zero-padded convolution: constant inside, different at the edges. That is exactly
    the convolution of a constant-1 input channel (zero-padded like the others), so the map can
    become that channel's weights plus an ordinary bias: the convolution, its bias and its ReLU
    are then one fused operation instead of three. Raises ValueError if the map is not so shaped.
    """
    m = bias_map[:, 0, :].double().numpy()
    length = m.shape[1]
    pos = np.arange(length)[:, None] + np.arange(kernel)[None, :] - padding
    a = np.concatenate([np.ones((length, 1)), ((pos >= 0) & (pos < length)).astype(np.float64)], 1)
    sol = np.linalg.lstsq(a, m.T, rcond=None)[0]  # (k + 1, C); rank k: the centre tap is always on
    if float(np.abs(a @ sol - m.T).max()) > 1e-6:
        raise ValueError("bias map is not a padded constant")
    return torch.from_numpy(sol[0]).float(), torch.from_numpy(sol[1:].T.copy()).float()


class ServingBranch(nn.Module):
    """A folded branch: (N, G * (C_in + 1), L) -> (N, G * (C + 1), L_last), where every group of
    channels carries one constant-1 channel (see split_bias_map) and G is 2 for the fused real and
    imaginary branch (block-diagonal weights as a 2-group convolution: the zero blocks skipped)."""

    def __init__(self, layers: dict):
        super().__init__()
        weights = layers["weights"]
        self.groups = 2 if all(block_diagonal_halves(w) is not None for w in weights) else 1
        self.padding, self.pools, self.scaled = layers["padding"], list(layers["pools"]), list(layers["scaled"])
        fused_w, fused_b, scales, shifts = [], [], [], []
        for w, bias_map, scale, shift in zip(weights, layers["maps"], layers["scales"], layers["shifts"]):
            w = w[:, :, 0, :]  # (C_out, C_in, k)
            bias, edge = split_bias_map(bias_map, w.shape[-1], self.padding)
            c_out, c_in, k = w.shape
            o, i = c_out // self.groups, c_in // self.groups
            gw = torch.zeros(self.groups * (o + 1), i + 1, k)
            gb = torch.zeros(self.groups * (o + 1))
            for g in range(self.groups):
                rows = slice(g * (o + 1), g * (o + 1) + o)
                gw[rows, :i] = w[g * o:(g + 1) * o, g * i:(g + 1) * i]
                gw[rows, i] = edge[g * o:(g + 1) * o]
                gb[rows] = bias[g * o:(g + 1) * o]
                gb[g * (o + 1) + o] = 1.0  # the group's constant-1 channel: no weights, bias 1, ReLU(1) = 1
            fused_w.append(nn.Parameter(gw, requires_grad=False))
            fused_b.append(nn.Parameter(gb, requires_grad=False))
            # a BatchNorm left before its pool (negative scale) is applied as it is; the constant
            # channels keep scale 1 and shift 0
            gs, gh = torch.ones(self.groups * (o + 1), 1), torch.zeros(self.groups * (o + 1), 1)
            if scale.numel():
                for g in range(self.groups):
                    rows = slice(g * (o + 1), g * (o + 1) + o)
                    gs[rows, 0], gh[rows, 0] = scale.flatten()[g * o:(g + 1) * o], shift.flatten()[g * o:(g + 1) * o]
            scales.append(nn.Parameter(gs, requires_grad=False))
            shifts.append(nn.Parameter(gh, requires_grad=False))
        self.weights, self.biases = nn.ParameterList(fused_w), nn.ParameterList(fused_b)
        self.scales, self.shifts = nn.ParameterList(scales), nn.ParameterList(shifts)
        self.channels_per_group = weights[-1].shape[0] // self.groups
        self.out_length = layers["maps"][-1].shape[-1] // (2 if self.pools[-1] else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.relu(F.conv1d(x, w, b, 1, self.padding, 1, self.groups))
            if self.scaled[i]:
                x = x * self.scales[i] + self.shifts[i]
            if self.pools[i]:
                x = F.max_pool1d(x, 2)
        return x

    def dense_columns(self, pooled: int) -> torch.Tensor:
        """Where each of the original network's pooled features sits among this branch's (with the
        constant channels): indices into the flattened (G * (C + 1), pooled) output."""
        c = self.channels_per_group
        keep = [g * (c + 1) + j for g in range(self.groups) for j in range(c)]
        return torch.tensor([ch * pooled + q for ch in keep for q in range(pooled)])


class ServingCNN(nn.Module):
    """The function of a FoldedCNN, (N, L) mV -> (N, K) probabilities, in ONNX-friendly operations."""

    def __init__(self, folded):
        super().__init__()
        n = int(folded.n_samples)
        self.n_samples = n
        self.use_v, self.use_dvdt = bool(folded.use_v), bool(folded.use_dvdt)
        self.v_offset, self.v_scale = float(folded.v_offset_mv), float(folded.v_scale_mv)
        self.fs_hz, self.dvdt_scale = float(folded.fs_hz), float(folded.dvdt_scale)
        pooled = int(folded.time_branch.pooled_length)
        self.time_branch = ServingBranch(read_branch(folded, "time_branch"))
        self.time_pool = nn.Parameter(average_pool_matrix(self.time_branch.out_length, pooled), requires_grad=False)
        columns = [self.time_branch.dense_columns(pooled)]
        widths = [self.time_branch.groups * (self.time_branch.channels_per_group + 1) * pooled]
        self.spectral = bool(folded.use_re or folded.use_im)
        if self.spectral:
            self.spectrum_branch = ServingBranch(read_branch(folded, "spectrum_branch"))
            k = torch.arange(n // 2 + 1, dtype=torch.float64)
            angle = 2 * torch.pi * torch.outer(torch.arange(n, dtype=torch.float64), k) / n
            centre = torch.eye(n, dtype=torch.float64) - 1.0 / n  # removes the window's mean
            parts = ([torch.cos(angle)] if folded.use_re else []) + ([-torch.sin(angle)] if folded.use_im else [])
            # each part is one group's input channel, followed by the group's constant-1 channel
            self.spectrum_groups = self.spectrum_branch.groups
            self.spectrum_matrix = nn.Parameter((centre @ torch.cat(parts, 1) / n).float(), requires_grad=False)
            self.spectrum_pool = nn.Parameter(average_pool_matrix(self.spectrum_branch.out_length, pooled),
                                              requires_grad=False)
            columns.append(self.spectrum_branch.dense_columns(pooled) + widths[0])
            widths.append(self.spectrum_branch.groups * (self.spectrum_branch.channels_per_group + 1) * pooled)
        params = dict(folded.named_parameters())
        w1 = torch.zeros(params["w1"].shape[0], sum(widths))
        w1[:, torch.cat(columns)] = params["w1"].detach()  # the constant channels get no weight
        self.w1 = nn.Parameter(w1, requires_grad=False)
        for name in ("b1", "w2", "b2"):
            setattr(self, name, nn.Parameter(params[name].detach().clone(), requires_grad=False))

    def time_inputs(self, v: torch.Tensor) -> torch.Tensor:
        """(N, L) mV -> (N, C + 1, L): the network's own time inputs (rtclassify.model.network) and the
        constant-1 channel."""
        x = stack_time_inputs(v, self.use_v, self.use_dvdt, self.fs_hz, self.v_offset, self.v_scale, self.dvdt_scale)
        return torch.cat([x, torch.ones_like(v).unsqueeze(1)], 1)

    def spectrum_inputs(self, v: torch.Tensor) -> torch.Tensor:
        """(N, L) mV -> (N, G * 2, F): each part of the spectrum followed by a constant-1 channel."""
        f = self.n_samples // 2 + 1
        s = (v @ self.spectrum_matrix).reshape(-1, self.spectrum_groups, 1, f)
        return torch.cat([s, torch.ones_like(s)], 2).reshape(-1, 2 * self.spectrum_groups, f)

    def forward(self, v_mv: torch.Tensor) -> torch.Tensor:
        """(N, L) membrane potential in mV -> (N, K) probabilities."""
        feats = [(self.time_branch(self.time_inputs(v_mv)) @ self.time_pool).flatten(1)]
        if self.spectral:
            feats.append((self.spectrum_branch(self.spectrum_inputs(v_mv)) @ self.spectrum_pool).flatten(1))
        h = torch.relu(torch.cat(feats, 1) @ self.w1.T + self.b1)
        return torch.softmax(h @ self.w2.T + self.b2, dim=1)


def verification_windows(n_samples: int, fs_hz: float, n: int = 24) -> np.ndarray:
    """(n, n_samples) float32 mV: fixed AP-like windows (peak 1/3 in, varied widths, heights,
    baselines and noise) and a few flat or noisy ones, the same at every call."""
    rng = np.random.default_rng(20261202)
    t = (np.arange(n_samples) - n_samples // 3) / fs_hz * 1e3  # ms from the peak
    out = np.empty((n, n_samples), np.float32)
    for k in range(n):
        rest, height = rng.uniform(-80, -50), rng.uniform(60, 120) * (k % 6 != 5)
        rise, fall = rng.uniform(0.1, 0.4), rng.uniform(0.2, 1.5)
        ap = np.where(t < 0, np.exp(-(t / rise) ** 2), np.exp(-(t / fall) ** 2))
        out[k] = rest + height * ap - 8.0 * (t > 0) * (1 - np.exp(-np.clip(t, 0, None) / 0.8)) \
            + rng.normal(0, 0.3, n_samples)
    return out


def export_onnx(folded) -> bytes:
    """The ONNX graph of `folded` (a FoldedCNN, eager or scripted), batch size dynamic."""
    net = ServingCNN(folded).eval()
    x = torch.full((1, net.n_samples), -60.0)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notices
        torch.onnx.export(net, (x,), buf, input_names=["v_mv"], output_names=["probs"], opset_version=ONNX_OPSET,
                          dynamic_axes={"v_mv": {0: "n"}, "probs": {0: "n"}}, dynamo=False)
    return buf.getvalue()


class OnnxRunner:
    """An ONNX Runtime session for one model: run((N, L) float32 mV) -> (N, K) float64 probabilities.

    One intra-op thread, sequential execution: the daemon calls it from one thread, on a few
    windows at a time, where a thread pool only adds wake-up latency.
    """

    def __init__(self, onnx_bytes: bytes):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.run_session = self.session.run

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.run_session(None, {"v_mv": windows})[0].astype(np.float64)


def verified_runner(graph: bytes, module, n_samples: int, fs_hz: float) -> OnnxRunner:
    """An OnnxRunner for `graph`; ValueError unless it matches the TorchScript `module` within
    VERIFY_TOLERANCE on the verification windows (the check at export and at every load)."""
    return verify(OnnxRunner(graph), module, n_samples, fs_hz, "the serving graph")


def verified_kernels(module, n_samples: int, fs_hz: float):
    """The folded network in `module` as compiled kernels (rtclassify.model.compiled.PackedNetwork);
    ValueError unless they match the TorchScript `module` within VERIFY_TOLERANCE, or when the
    module is not a folded network."""
    from rtclassify.model.compiled import PackedNetwork

    try:
        net = ServingCNN(module)
    except (AttributeError, KeyError, RuntimeError) as exc:
        raise ValueError(f"not a folded network ({type(exc).__name__}: {exc})") from None
    return verify(PackedNetwork(net), module, n_samples, fs_hz, "the compiled kernels")


def verify(runner, module, n_samples: int, fs_hz: float, what: str):
    """`runner`, or ValueError naming `what` when it differs from the TorchScript `module`."""
    diff = check_against_reference(runner, module, n_samples, fs_hz)
    if diff > VERIFY_TOLERANCE:
        raise ValueError(f"{what}'s probabilities differ from the network's by {diff:.3e} (> {VERIFY_TOLERANCE:.1e})")
    return runner


def check_against_reference(runner, module, n_samples: int, fs_hz: float) -> float:
    """Largest |probability difference| between `runner` and the TorchScript `module` on the
    verification windows (in one batch and one by one)."""
    x = verification_windows(n_samples, fs_hz)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).double().numpy()
    diff = float(np.max(np.abs(runner(x) - ref)))
    single = max(float(np.max(np.abs(runner(x[k:k + 1]) - ref[k:k + 1]))) for k in range(0, len(x), 5))
    return max(diff, single)
