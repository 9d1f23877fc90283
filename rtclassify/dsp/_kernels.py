"""Hot kernels: pure functions over numpy arrays, JIT-compiled by numba (nopython, nogil, cached).

Each has a plain numpy reference in `rtclassify/dsp/detector.py` (`*_reference`) that the tests compare
it with on random and real inputs. Call `warm_up()` at start-up so that no live chunk pays for
compilation. Units: v in mV, i in pA, dv/dt in mV/ms, indices in samples.
"""
import numba
import numpy as np

JIT = dict(nopython=True, nogil=True, cache=True)
COARSE_PER_MS = 25.0  # samples per ms at and below which an AP's steepest sample may be its last rising one


@numba.jit(**JIT)
def scan_step_edges(i_pa, holding_pa, threshold_pa, in_step, edges):
    """One streamed chunk of the command current: where the step state flips, and the quiet level.

    i_pa: (n,) pA, any stride. A sample is "on" when |i - holding| > threshold; in_step: the state
    before the chunk's first sample. edges: preallocated int64; receives the chunk-relative index
    of every flip (on at an onset, off at an offset) while it has room. Returns (number of flips,
    which may exceed len(edges); sum of the "off" samples in pA; their count), from which the
    daemon tracks a drifting holding current. Also finds the steps of a whole trace (detect_steps).
    """
    count = 0
    state = in_step
    step_sum = 0.0  # the quiet sum is the total less the step samples': the step samples are few and
    step_n = 0      # come in runs, so this loop carries no floating-point sum from sample to sample
    for k in range(len(i_pa)):
        on = abs(i_pa[k] - holding_pa) > threshold_pa
        if on != state:
            if count < len(edges):
                edges[count] = k
            count += 1
            state = on
        if on:
            step_sum += i_pa[k]
            step_n += 1
    return count, sum_samples(i_pa) - step_sum, len(i_pa) - step_n


@numba.jit(**dict(JIT, fastmath=True))
def sum_samples(x):
    """Sum of x (n,), any stride, in vectorised partial sums (fastmath: reassociated)."""
    total = 0.0
    for k in range(len(x)):
        total += x[k]
    return total


@numba.jit(**JIT)
def slope(v_mv, k, per_ms):
    """dV/dt at sample k >= 1 in mV/ms (first difference; detection.compute_dvdt_reference)."""
    return (v_mv[k] - v_mv[k - 1]) * per_ms


@numba.jit(**JIT)
def find_spikes(v_mv, per_ms, masked, dvdt_threshold, min_acceleration, min_amplitude_mv, refractory,
                thresholds, peaks, complete):
    """Action potentials on a membrane-potential trace.

    v_mv: (n,) mV; per_ms: samples per ms (fs / 1000), so that dv/dt at k is
    (v[k] - v[k - 1]) * per_ms in mV/ms, computed where it is needed (writing it out for a whole
    trace cost ~1/5 of the search, in memory traffic). masked: (n,) bool, True on stimulus-edge artifacts (no spike
    may start there, and a peak cannot be seen through them).
    A candidate is a run of rising V that starts with dv/dt >= dvdt_threshold. It is an AP when,
    within the run, dv/dt climbs at least min_acceleration above its lowest preceding value (a
    charging membrane only decelerates; a spike accelerates), V then rises min_amplitude_mv above
    its value where that climb began (the threshold), and dv/dt has passed its maximum before the
    run ends. The peak is where dv/dt turns negative, or the last sample before an artifact that
    hides it.
    thresholds, peaks: preallocated int64 outputs (sample indices). complete: (1,) int64 output,
    the index up to which the search is final: a run still rising at the end of the data is left
    for the next call on longer data.
    Returns the number of spikes written.
    """
    n = len(v_mv)
    n_max = len(thresholds)
    count = 0
    complete[0] = n
    # Which rises could hold an AP. Within a run V only rises, so an AP's amplitude is at most the
    # rise of its stretch of rising, unmasked samples, v[j] - v[b] with b the last sample before
    # the stretch; `hot` marks where that reaches min_amplitude_mv. A run with no hot sample is
    # rejected below with no other effect, so the search jumps over the stretches before the next
    # hot sample. Why: on noisy 200 kHz data dv/dt crosses the threshold every few samples, and
    # deciding each such run cost ~3x this pass, whose only branch is a select.
    hot = np.empty(n, np.bool_)
    hot[0] = False
    b = 0
    for j in range(1, n):
        up = (v_mv[j] > v_mv[j - 1]) & (not masked[j])
        b = b if up else j
        hot[j] = v_mv[j] - v_mv[b] >= min_amplitude_mv
    k = 1
    aim = 0  # the hot sample the last jump went for: the next jump is looked for once k is past it
    while k < n:
        if k > aim:
            h = k
            while h < n and not hot[h]:
                h += 1
            if h == n:  # no AP from k on; only a run still rising at the end of the data matters
                if not (v_mv[n - 1] > v_mv[n - 2] and not masked[n - 1]):
                    break
                h = n - 1
            aim = h
            while h > k and v_mv[h - 1] > v_mv[h - 2] and not masked[h - 1]:  # back to its stretch's start
                h -= 1
            k = h
        if masked[k] or slope(v_mv, k, per_ms) < dvdt_threshold:
            k += 1
            continue
        start = k
        low = k  # where dv/dt was lowest so far in the run
        best_gain = 0.0
        best_low = k
        best_top = k
        j = k
        while j < n and not masked[j] and slope(v_mv, j, per_ms) > 0.0:
            if slope(v_mv, j, per_ms) < slope(v_mv, low, per_ms):
                low = j
            gain = slope(v_mv, j, per_ms) - slope(v_mv, low, per_ms)
            if gain > best_gain:
                best_gain = gain
                best_low = low
                best_top = j
            j += 1
        if j >= n:
            complete[0] = start  # still rising at the end of the data: decide later
            return count
        peak = j - 1
        # an AP whose peak is hidden by a stimulus-edge artifact is still an AP; its peak is then
        # the last visible sample (the caller can tell: the next sample is masked)
        # the upstroke must be seen to slow down: a dv/dt still climbing into an artifact is not
        # told apart from the charging transient at the pulse's end. At 25 kHz and below a fast AP's
        # steepest sample is often its last rising one: there V turning down in view is a peak seen
        slowed = best_top < peak or (per_ms <= COARSE_PER_MS and not masked[j])
        if slowed and best_gain >= min_acceleration and v_mv[peak] - v_mv[best_low] >= min_amplitude_mv:
            if count < n_max:
                thresholds[count] = best_low
                peaks[count] = peak
                count += 1
            k = peak + refractory
        else:
            k = j
        # skip to where dv/dt is back below threshold, so that one AP is one run
        while k < n and slope(v_mv, k, per_ms) >= dvdt_threshold and not masked[k]:
            k += 1
    return count


@numba.jit(**JIT)
def find_hidden_upstroke(v_mv, start, stop, span, scale, knee_gain, floor):
    """The upstroke of an AP whose peak a step's end hides: where it began, or -1.

    During a depolarising step a passive membrane charges ever more slowly: dV/dt only falls. An
    AP starting inside the step makes dV/dt rise again (a knee) however large the bridge artefact
    the voltage rides on; when V is still rising as the step ends, the AP's peak is hidden by the
    end's artefact (an AP whose V turns down inside the step is `find_spikes`'s).
    v_mv: (n,) mV. Looks at samples start..stop-1 (the step's inside with its edges masked) through
    the slope over `span` samples, s[k] = (v[k] - v[k - span]) * scale in mV/ms (start >= span).
    Returns the sample where s was lowest before it rose most, when it rose by >= knee_gain mV/ms
    and s never fell below `floor` mV/ms (V kept rising); else -1.
    """
    if stop - start < 2 or start < span:
        return -1
    low = start
    s_low = (v_mv[start] - v_mv[start - span]) * scale
    best_gain = 0.0
    best_low = -1
    for k in range(start, stop):
        s = (v_mv[k] - v_mv[k - span]) * scale
        if s < floor:
            return -1  # V turned down inside the step: its peak, if any, was in plain view
        if s < s_low:
            s_low = s
            low = k
        if s - s_low > best_gain:
            best_gain = s - s_low
            best_low = low
    return best_low if best_gain >= knee_gain else -1


@numba.jit(**JIT)
def extend_by_lines(x, ext, row):
    """row (len(x) + 2 * ext,) = x extended by `ext` samples at either end along the straight line
    through its first and last samples (scipy's padtype="line")."""
    n = len(x)
    gradient = (x[n - 1] - x[0]) / (n - 1) if n > 1 else 0.0
    for q in range(ext):
        row[q] = x[0] - (ext - q) * gradient
        row[ext + n + q] = x[n - 1] + (q + 1) * gradient
    for i in range(n):
        row[ext + i] = x[i]


@numba.jit(**JIT)
def fir_output(row, taps, up, down, k, ext):
    """Output sample k of upfirdn(taps, row[ext:-ext] line-extended, up, down): only every up-th
    tap meets a real (not inserted) sample."""
    pos = k * down  # index into the upsampled signal
    acc = 0.0
    j = pos % up
    m = (pos - j) // up + ext
    while j < len(taps):
        acc += taps[j] * row[m]
        j += up
        m -= 1
    return acc


@numba.jit(**JIT)
def resample_rows(x, taps, up, down, first, out):
    """Polyphase FIR resampling of each row of x, as scipy's upfirdn(taps, row, up, down,
    mode="line")[first:first + n_out]: the row is extended beyond its ends by the straight line
    through its first and last samples, upsampled by `up` (zeros between samples), filtered by
    `taps` and decimated by `down`, computing only the kept outputs.

    x: (rows, n) float64; taps: (m,) float64 (already scaled by up); out: (rows, n_out) float64.
    """
    ext = len(taps) // up + 2  # samples of line extension needed on either side
    row = np.empty(x.shape[1] + 2 * ext)
    for r in range(x.shape[0]):
        extend_by_lines(x[r], ext, row)
        for k in range(out.shape[1]):
            out[r, k] = fir_output(row, taps, up, down, first + k, ext)


@numba.jit(**dict(JIT, fastmath=True))
def resample_ring_window(ring, row0, n, ext, phase_taps, phases, starts, out):
    """One window straight from a ring buffer: the n samples of column 0 from row `row0` on
    (wrapping at the end), line-extended by `ext` samples, and at each output i the dot product of
    phase_taps[phases[i]] with the extended samples from starts[i] on, into out (float32).

    The plan (windows.WindowCutter) makes this resample_rows' polyphase filter at the kept outputs,
    with each phase's taps reversed so that the sums run forwards over contiguous samples, which
    LLVM vectorises (fastmath: reassociated sums, equal to resample_rows within float64 rounding).
    """
    row = np.empty(n + 2 * ext)
    capacity = ring.shape[0]
    head = min(n, capacity - row0)  # samples before the ring wraps
    for i in range(head):
        row[ext + i] = ring[row0 + i, 0]
    for i in range(head, n):
        row[ext + i] = ring[i - head, 0]
    extend_by_lines(row[ext:ext + n], ext, row)  # in place: it rewrites the middle unchanged
    width = phase_taps.shape[1]
    for i in range(len(phases)):
        taps = phase_taps[phases[i]]
        s = starts[i]
        acc = 0.0
        for j in range(width):
            acc += taps[j] * row[s + j]
        out[i] = acc


def warm_up() -> None:
    """Compile every kernel once on tiny inputs (call at start-up, not on the first live chunk)."""
    v = np.linspace(-60.0, 20.0, 16)
    i = np.zeros(16)
    i[4:8] = 100.0
    on = np.zeros(4, np.int64)
    off = np.zeros(4, np.int64)
    scan_step_edges(i.astype(np.float32), 0.0, 10.0, False, on)  # detect_steps on float32 recordings
    interleaved = np.zeros((16, 2))  # the daemon passes a column of its (n, 2) ring buffer
    interleaved[:, 1] = i
    scan_step_edges(interleaved[:, 1], 0.0, 10.0, False, np.zeros(16, np.int64))
    scan_step_edges(i, 0.0, 10.0, False, np.zeros(16, np.int64))
    resample_rows(np.zeros((1, 16)), np.ones(9), 1, 4, 1, np.zeros((1, 4)))
    resample_ring_window(interleaved, 12, 8, 4, np.ones((1, 3)), np.zeros(2, np.int64), np.arange(2),
                         np.zeros(2, np.float32))
    find_spikes(v, 50.0, np.zeros(16, np.bool_), 20.0, 10.0, 5.0, 5, on, off, np.zeros(1, np.int64))
    find_hidden_upstroke(v, 4, 12, 2, 25.0, 20.0, -2.0)
