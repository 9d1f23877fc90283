"""The serving network as one compiled function: the CPU path whose per-call cost is the arithmetic.

`PackedNetwork` lays a `serving.ServingCNN` (the folded network in fused form: constant-1 channels
carry the edge biases, the real and imaginary branches are two groups) out as flat float32 weights
and an int64 layer table; `forward_windows` runs it on (N, L) windows with numba in one call,
in a workspace that comes with the pack. A window costs ~1.2 M multiply-adds: each convolution
is a BLAS matrix product (numba's np.dot), the rest loops along the time axis.

Why not only ONNX Runtime: its call walks a graph of ~40 nodes through the runtime's executor, a
large body of code that the daemon's other work (and other processes) evict from the CPU caches
between stimuli; the call after a pause then costs several times a warm one (`rtclassify bench`,
rows "after 5 ms idle"). This function is a few kilobytes of code over ~0.3 MB of weights.

Checked like the ONNX graph: against the TorchScript module on the verification windows at every
load (serving.verified_kernels), and in tests/test_serving.py.
"""
import numba
import numpy as np

# columns of a branch's layer table
C_OUT, C_IN_GROUP, KERNEL, GROUPS, PADDING, POOL, SCALED, W_OFF, B_OFF, S_OFF, H_OFF = range(11)
LAYER_COLUMNS = 11


def pack_branch(branch, weights: list) -> np.ndarray:
    """(n_layers, LAYER_COLUMNS) int64 table of a ServingBranch; appends its parameters (float32,
    flattened) to `weights` and records their offsets (counted over the whole list)."""
    table = np.zeros((len(branch.weights), LAYER_COLUMNS), np.int64)
    offset = sum(len(w) for w in weights)
    for i, (w, b, s, h) in enumerate(zip(branch.weights, branch.biases, branch.scales, branch.shifts)):
        c_out, c_in_group, k = w.shape
        row = table[i]
        row[C_OUT], row[C_IN_GROUP], row[KERNEL], row[GROUPS] = c_out, c_in_group, k, branch.groups
        row[PADDING], row[POOL], row[SCALED] = branch.padding, int(branch.pools[i]), int(branch.scaled[i])
        for col, p in ((W_OFF, w), (B_OFF, b), (S_OFF, s), (H_OFF, h)):
            flat = p.detach().float().numpy().ravel()
            row[col] = offset
            weights.append(flat)
            offset += len(flat)
    return table


class PackedNetwork:
    """A ServingCNN's parameters as arrays for `forward_windows`, with its workspace: one caller at
    a time (the daemon's single thread)."""

    def __init__(self, net):
        weights: list = []
        self.time_layers = pack_branch(net.time_branch, weights)
        spectral = bool(net.spectral)
        self.spectrum_layers = (pack_branch(net.spectrum_branch, weights) if spectral
                                else np.zeros((0, LAYER_COLUMNS), np.int64))
        self.weights = np.concatenate(weights).astype(np.float32)
        as32 = lambda t: np.ascontiguousarray(t.detach().float().numpy())  # noqa: E731
        self.time_pool = as32(net.time_pool)  # (L_last, pooled)
        self.spectrum_pool = as32(net.spectrum_pool) if spectral else np.zeros((1, 1), np.float32)
        self.spectrum_matrix = as32(net.spectrum_matrix) if spectral else np.zeros((1, 1), np.float32)
        self.spectrum_groups = int(net.spectrum_groups) if spectral else 0
        self.w1, self.b1, self.w2, self.b2 = (as32(t) for t in (net.w1, net.b1, net.w2, net.b2))
        # time inputs: (v - v_offset) / v_scale, dv/dt (mV/ms) / dvdt_scale, as the network's own
        self.inputs = np.array([float(net.use_v), float(net.use_dvdt), net.v_offset, net.v_scale, net.fs_hz / 1e3,
                                net.dvdt_scale], np.float64)
        n = int(net.n_samples)
        tables = [self.time_layers, self.spectrum_layers]
        widest = max(int(t[:, C_OUT].max()) for t in tables if len(t))
        pad = max(int(t[0, PADDING]) for t in tables if len(t))
        self.work = np.zeros((2, max(widest, 8), n + 2 * pad), np.float32)  # ping, pong: padded layer inputs
        rows = max(int((t[:, C_IN_GROUP] * t[:, KERNEL]).max()) for t in tables if len(t))
        self.columns = np.zeros(rows * n, np.float32)  # a layer's shifted input copies (flat)
        self.products = np.zeros(widest * n, np.float32)  # a layer's matrix product (flat)
        self.features = np.zeros(self.w1.shape[1], np.float32)
        self.hidden = np.zeros(self.w1.shape[0], np.float32)
        self.n_classes = self.w2.shape[0]

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """(N, L) float32 mV -> (N, K) float64 probabilities."""
        out = np.empty((windows.shape[0], self.n_classes), np.float64)
        forward_windows(np.ascontiguousarray(windows, dtype=np.float32), self.inputs, self.time_layers,
                        self.spectrum_layers, self.weights, self.time_pool, self.spectrum_pool, self.spectrum_matrix,
                        self.spectrum_groups, self.w1, self.b1, self.w2, self.b2, self.work, self.columns,
                        self.products, self.features,
                        self.hidden, out)
        return out


JIT = dict(nopython=True, nogil=True, cache=True, boundscheck=False, fastmath=True)


@numba.jit(**JIT)
def run_branch(layers, weights, work, columns, products, length):
    """Run a branch whose input channels sit in work[0] (zero-padded by the branch's padding);
    returns (index of the work plane holding the output, its channels, its length).

    Each layer and group is one matrix product, (C_out/G, C_in/G * k) weights by the (C_in/G * k,
    length) shifted copies of the input (`columns`), into `products`; ReLU, scale and max-pool then
    write the next layer's padded input. The product goes to BLAS, whose kernels keep the
    accumulators in registers (a plain loop here reached ~5 G multiply-adds/s, BLAS ~20)."""
    src = 0
    for i in range(layers.shape[0]):
        c_out, cin_g, k, groups, pad = layers[i, C_OUT], layers[i, C_IN_GROUP], layers[i, KERNEL], \
            layers[i, GROUPS], layers[i, PADDING]
        dst = 1 - src
        out_length = length // 2 if layers[i, POOL] else length
        cout_g = c_out // groups
        rows = cin_g * k
        for g in range(groups):
            cols = columns[:rows * length].reshape((rows, length))
            for ci in range(cin_g):
                x = work[src, g * cin_g + ci]
                for j in range(k):
                    r = cols[ci * k + j]
                    for t in range(length):
                        r[t] = x[t + j]
            w_start = layers[i, W_OFF] + g * cout_g * rows
            w = weights[w_start:w_start + cout_g * rows].reshape((cout_g, rows))
            prod = products[:cout_g * length].reshape((cout_g, length))
            np.dot(w, cols, prod)
            for o in range(cout_g):
                co = g * cout_g + o
                bias = weights[layers[i, B_OFF] + co]
                scale, shift = np.float32(1.0), np.float32(0.0)
                if layers[i, SCALED]:
                    scale, shift = weights[layers[i, S_OFF] + co], weights[layers[i, H_OFF] + co]
                acc = prod[o]
                y = work[dst, co]
                for t in range(pad):  # the next layer's zero padding
                    y[t] = 0.0
                    y[pad + out_length + t] = 0.0
                if layers[i, POOL]:
                    for t in range(out_length):
                        a = max(acc[2 * t] + bias, np.float32(0.0)) * scale + shift
                        b = max(acc[2 * t + 1] + bias, np.float32(0.0)) * scale + shift
                        y[pad + t] = max(a, b)
                else:
                    for t in range(out_length):
                        y[pad + t] = max(acc[t] + bias, np.float32(0.0)) * scale + shift
        src, length = dst, out_length
    return src, layers[layers.shape[0] - 1, C_OUT], length


@numba.jit(**JIT)
def pool_into(work, plane, channels, length, pad, pool, features, start):
    """features[start + c * pooled + q] = sum_t work[plane, c, pad + t] * pool[t, q]."""
    pooled = pool.shape[1]
    for c in range(channels):
        for q in range(pooled):
            s = np.float32(0.0)
            for t in range(length):
                s += work[plane, c, pad + t] * pool[t, q]
            features[start + c * pooled + q] = s
    return start + channels * pooled


@numba.jit(**JIT)
def forward_windows(windows, inputs, time_layers, spectrum_layers, weights, time_pool, spectrum_pool, spectrum_matrix,
                    spectrum_groups, w1, b1, w2, b2, work, columns, products, features, hidden, out):
    """(N, L) float32 mV windows -> out (N, K) float64 probabilities (see PackedNetwork)."""
    n = windows.shape[1]
    use_v, use_dvdt, v_offset, v_scale, per_ms, dvdt_scale = inputs[0], inputs[1], inputs[2], inputs[3], \
        inputs[4], inputs[5]
    for w in range(windows.shape[0]):
        v = windows[w]
        # time branch: [V normalised, dV/dt scaled, 1] with zero padding
        pad = time_layers[0, PADDING]
        work[0, :, :] = 0.0
        c = 0
        if use_v:
            for t in range(n):
                work[0, c, pad + t] = (v[t] - v_offset) / v_scale
            c += 1
        if use_dvdt:
            for t in range(1, n):
                work[0, c, pad + t] = (v[t] - v[t - 1]) * per_ms / dvdt_scale
            work[0, c, pad] = work[0, c, pad + 1]
            c += 1
        for t in range(n):
            work[0, c, pad + t] = 1.0
        plane, channels, length = run_branch(time_layers, weights, work, columns, products, n)
        filled = pool_into(work, plane, channels, length, pad, time_pool, features, 0)
        if spectrum_layers.shape[0]:
            # spectrum branch: per group [part of the spectrum, 1]
            pad = spectrum_layers[0, PADDING]
            f = n // 2 + 1
            work[0, :, :] = 0.0
            # the matrix removes the window's mean itself; removing it first (in float64) spares the
            # float32 sums the cancellation of a ~-60 mV baseline
            mean = 0.0
            for t in range(n):
                mean += v[t]
            mean /= n
            for g in range(spectrum_groups):
                for j in range(f):
                    work[0, 2 * g + 1, pad + j] = 1.0
                for t in range(n):
                    vt = np.float32(v[t] - mean)
                    row = spectrum_matrix[t]
                    for j in range(f):
                        work[0, 2 * g, pad + j] += vt * row[g * f + j]
            plane, channels, length = run_branch(spectrum_layers, weights, work, columns, products, f)
            filled = pool_into(work, plane, channels, length, pad, spectrum_pool, features, filled)
        for h in range(w1.shape[0]):
            s = b1[h]
            for j in range(filled):
                s += w1[h, j] * features[j]
            hidden[h] = max(s, np.float32(0.0))
        top = -np.inf
        for k in range(w2.shape[0]):
            s = b2[k]
            for h in range(w1.shape[0]):
                s += w2[k, h] * hidden[h]
            out[w, k] = s
            top = max(top, out[w, k])
        total = 0.0
        for k in range(w2.shape[0]):
            out[w, k] = np.exp(out[w, k] - top)
            total += out[w, k]
        for k in range(w2.shape[0]):
            out[w, k] /= total
