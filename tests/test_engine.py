"""The streaming engine on synthetic chunks: one answer per stimulus, gaps, events, shutdown."""
import numpy as np
import pytest

from helpers import spike_sweep
from rtclassify.daemon.engine import Engine, ServeConfig
from rtclassify.model.file_format import load_model

# tests that are not about the latency budget must not depend on this machine's load:
# never shed a window as late
UNHURRIED = 1e9


@pytest.fixture(scope="module")
def model():
    return load_model("genetic5")


def run_chunks(engine, v, i, fs, chunk=50, headstage=0, start=0, seq0=0):
    for k, a in enumerate(range(0, len(v), chunk)):
        engine.on_data(headstage, start + a, seq0 + k, fs, np.column_stack([v[a:a + chunk], i[a:a + chunk]]))
        engine.classify_ready()


def collect():
    out = []
    return out, lambda topic, msg: out.append((topic, msg))


def test_one_label_per_spiking_stimulus_and_a_skip_otherwise(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    v1, i1 = spike_sweep(spike=True)
    v2, i2 = spike_sweep(spike=False, seed=1)
    run_chunks(eng, np.r_[v1, v2], np.r_[i1, i2], 50_000.0)
    answers = [(t, m) for t, m in out if t in ("label", "skip")]
    assert [t for t, _ in answers] == ["label", "skip"]
    label, skip = answers[0][1], answers[1][1]
    assert label["stim_onset_sample"] == 500 and skip["stim_onset_sample"] == 3500 and skip["reason"] == "no_spike"
    peak = 500 + 160  # 3.2 ms at 50 kHz
    assert abs(label["peak_sample"] - peak) <= 1
    assert label["window_end_sample"] == label["peak_sample"] + 99  # 2 ms after the peak, last sample
    assert abs(sum(label["probs"].values()) - 1) < 1e-3
    assert label["cell"]["n_windows"] == 1 and set(label["latency_ms"]) >= {"process", "detect", "inference"}


def test_label_leaves_as_soon_as_the_window_is_complete(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    v, i = spike_sweep()
    peak = 660
    end = peak + 100  # exclusive end of the window
    run_chunks(eng, v[:end - 1], i[:end - 1], 50_000.0, chunk=10)
    assert not [m for t, m in out if t == "label"]
    eng.on_data(0, end - 1, None, 50_000.0, np.column_stack([v[end - 1:end], i[end - 1:end]]))
    eng.classify_ready()
    assert len([m for t, m in out if t == "label"]) == 1


def test_gap_skips_the_open_stimulus_and_recovers(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    v, i = spike_sweep()
    run_chunks(eng, v[:600], i[:600], 50_000.0)  # stimulus open, no peak yet
    run_chunks(eng, v, i, 50_000.0, start=10_000, seq0=100)  # jump of first_sample and seq
    skips = [m for t, m in out if t == "skip"]
    assert skips and skips[0]["reason"] == "gap" and skips[0]["stim_onset_sample"] == 500
    assert [m for t, m in out if t == "gap"]
    labels = [m for t, m in out if t == "label"]
    assert len(labels) == 1 and labels[0]["stim_onset_sample"] == 10_500


def test_new_cell_resets_the_accumulated_verdict(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    eng.on_event({"type": "new_cell", "headstage": 0, "cell_id": "A", "sample": 0})
    v, i = spike_sweep()
    run_chunks(eng, np.r_[v, v], np.r_[i, i], 50_000.0)
    eng.on_event({"type": "new_cell", "headstage": 0, "cell_id": "B", "sample": 6000})
    run_chunks(eng, v, i, 50_000.0, start=6000, seq0=1000)
    labels = [m for t, m in out if t == "label"]
    assert [(m["cell_id"], m["cell"]["n_windows"]) for m in labels] == [("A", 1), ("A", 2), ("B", 1)]


def test_stimulus_events_replace_step_detection(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    v, i = spike_sweep()
    eng.on_data(0, 0, 0, 50_000.0, np.column_stack([v[:100], np.zeros(100)]))
    eng.on_event({"type": "stimulus", "headstage": 0, "sample": 500})
    run_chunks(eng, v[100:], np.zeros(len(v) - 100), 50_000.0, start=100, seq0=1)
    labels = [m for t, m in out if t == "label"]
    assert len(labels) == 1 and labels[0]["stim_onset_sample"] == 500


def test_shutdown_answers_every_open_stimulus(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    v, i = spike_sweep()
    run_chunks(eng, v[:600], i[:600], 50_000.0)
    eng.flush()
    skips = [m for t, m in out if t == "skip"]
    assert len(skips) == 1 and skips[0]["reason"] == "shutdown"


def test_200khz_stream_is_resampled_to_the_model_rate(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED, include_window=True), emit)
    v, i = spike_sweep(fs=200_000.0, n=12_000, onset=2000)
    run_chunks(eng, v, i, 200_000.0, chunk=200)
    labels = [m for t, m in out if t == "label"]
    assert len(labels) == 1 and len(labels[0]["window"]["v_mv"]) == model.spec.n_samples
    assert labels[0]["window_end_sample"] == labels[0]["peak_sample"] + 399


def test_a_whole_sweep_in_one_message_loses_nothing(model):
    """Some acquisition programs send each finished sweep at once: 3 s at 200 kHz, larger than the buffer."""
    out, emit = collect()
    eng = Engine(model, ServeConfig(buffer_s=1.0, shed_factor=UNHURRIED), emit)
    fs = 200_000.0
    v = np.full(600_000, -70.0)
    i = np.zeros(600_000)
    sv, si = spike_sweep(fs=fs, n=6000, onset=2000)
    v[204_000 - 2000:204_000 + 4000] = sv  # the step at 1.02 s, as in Allen sweeps
    i[204_000 - 2000:204_000 + 4000] = si
    eng.on_data(0, 0, 0, fs, np.column_stack([v, i]))
    eng.classify_ready()
    labels = [m for t, m in out if t == "label"]
    assert len(labels) == 1 and labels[0]["stim_onset_sample"] == 204_000


def test_ring_buffer_wraps_and_grows_without_losing_samples():
    from rtclassify.daemon.ring_buffer import RingBuffer

    buf = RingBuffer(100)
    x = np.column_stack([np.arange(600.0), -np.arange(600.0)])
    for a in range(0, 250, 30):
        buf.write(x[a:a + 30])
    assert buf.start == 170 and buf.end == 270
    assert np.array_equal(buf.read(180, 270), x[180:270])
    buf.grow(400)
    assert np.array_equal(buf.read(170, 270), x[170:270])
    buf.write(x[:300] + 1000)
    assert np.array_equal(buf.read(270, 570), x[:300] + 1000) and buf.start == 170
    with pytest.raises(IndexError, match="buffer-s"):
        buf.read(100, 200)


class SteppingClock:
    """A clock that advances by `step` seconds at every reading (makes every stage look slow)."""

    def __init__(self, step):
        self.t = 0.0
        self.step = step

    def __call__(self):
        self.t += self.step
        return self.t


def test_late_labels_are_published_and_marked(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(budget_ms=2.0), emit, clock=SteppingClock(0.001))  # 1 ms per reading
    v, i = spike_sweep()
    run_chunks(eng, v, i, 50_000.0)
    labels = [m for t, m in out if t == "label"]
    assert len(labels) == 1 and labels[0]["late"] is True and labels[0]["latency_ms"]["process"] > 2.0


def test_overload_is_shed_with_a_late_skip_not_dropped(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(budget_ms=2.0, shed_factor=20.0), emit, clock=SteppingClock(0.05))
    v, i = spike_sweep()
    run_chunks(eng, v, i, 50_000.0)
    answers = [(t, m) for t, m in out if t in ("label", "skip")]
    assert [(t, m.get("reason")) for t, m in answers] == [("skip", "late")]


def test_an_idle_model_is_primed_while_a_window_completes(model):
    """Priming happens while the window's last samples are still due, at most once per
    PRIME_IDLE_S of model idleness, and changes no answer."""
    out, emit = collect()
    now = [0.0]
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit, clock=lambda: now[0])
    v, i = spike_sweep()
    peak = 660
    run_chunks(eng, v[:peak + 20], i[:peak + 20], 50_000.0, chunk=10)  # peak seen, window not complete
    assert eng.batch.primes == 1 and not [m for t, m in out if t == "label"]
    run_chunks(eng, v[peak + 20:peak + 60], i[peak + 20:peak + 60], 50_000.0, chunk=10, start=peak + 20, seq0=68)
    assert eng.batch.primes == 1  # the clock stood still: the model is still warm
    now[0] += 1.0  # a second later the model is idle again
    run_chunks(eng, v[peak + 60:], i[peak + 60:], 50_000.0, chunk=10, start=peak + 60, seq0=72)
    assert not [m for t, m in out if t in ("gap", "skip")]
    labels = [m for t, m in out if t == "label"]
    assert len(labels) == 1 and eng.batch.primes == 2
    plain_out, plain_emit = collect()
    plain = Engine(model, ServeConfig(shed_factor=UNHURRIED), plain_emit)
    plain.batch.prime = lambda: None
    run_chunks(plain, v, i, 50_000.0, chunk=len(v))
    assert [m["probs"] for t, m in plain_out if t == "label"] == [labels[0]["probs"]]
    assert eng.heartbeat()["primes"] == 2


def test_a_model_that_just_ran_is_not_primed(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit, clock=lambda: 5.0)
    eng.batch.last_inference = 5.0 - 0.0005  # ran half a millisecond ago
    v, i = spike_sweep()
    run_chunks(eng, v, i, 50_000.0, chunk=10)
    assert eng.batch.primes == 0 and len([m for t, m in out if t == "label"]) == 1


def test_pending_while_a_stimulus_awaits_its_answer(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    v, i = spike_sweep()
    assert not eng.has_pending()
    run_chunks(eng, v[:520], i[:520], 50_000.0, chunk=10)  # onset at 500 seen, no answer yet
    assert eng.has_pending()
    run_chunks(eng, v[520:], i[520:], 50_000.0, chunk=10, start=520, seq0=52)
    assert [t for t, _ in out if t in ("label", "skip")] == ["label"] and not eng.has_pending()


def test_an_ap_hidden_by_the_pulse_end_is_a_qc_skip_not_a_label(model, evoked_dir):
    """Real recordings whose AP rides on a large bridge artefact and is still rising when the
    pulse ends (cut at the pulse onset: 20 ms of holding current put before them)."""
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    for hs, name in enumerate(("1544582617.589_41_0_1.105", "1521004040.059_24_4_3.074")):  # two cells
        z = np.load(evoked_dir / f"{name}.npz")
        v, i = z["v"].astype(np.float64) * 1e3, z["i"].astype(np.float64) * 1e12
        v, i = np.r_[np.full(1000, v[-1]), v, np.full(1000, v[-1])], np.r_[np.full(1000, i[-1]), i, np.full(1000, i[-1])]
        run_chunks(eng, v, i, 50_000.0, headstage=hs)
    answers = [(t, m) for t, m in out if t in ("label", "skip")]
    assert [t for t, _ in answers] == ["skip", "skip"]
    assert all(m["reason"] == "qc" and "hidden" in m["detail"] for _, m in answers), answers


def step_family_sweep(amp_pa, fs=20_000.0, seed=0, spikes=()):
    """(v mV, i pA) of one 1 s sweep: a 400 ms step of amp_pa at 200 ms, an RC membrane (100 MΩ,
    20 ms) and APs at the given times (s)."""
    rng = np.random.default_rng(seed)
    n, on, off = int(1.0 * fs), int(0.2 * fs), int(0.6 * fs)
    t = np.arange(n) / fs
    i = np.zeros(n)
    i[on:off] = amp_pa
    dv = amp_pa * 0.1  # 100 MΩ: mV per pA
    v = np.full(n, -70.0)
    v[on:off] += dv * (1 - np.exp(-(t[on:off] - t[on]) / 0.02))
    v[off:] += (v[off - 1] + 70.0) * np.exp(-(t[off:] - t[off]) / 0.02)  # relaxing back to rest
    for ts in spikes:
        k = int(ts * fs)
        shape = np.concatenate([(1 - np.cos(np.pi * np.linspace(0, 1, 20))) / 2, np.linspace(1, -0.15, 40),
                                -0.15 * np.exp(-np.arange(200) / 50.0)]) * 100
        v[k:k + len(shape)] += shape
    return v + rng.normal(0, 0.05, n), i + rng.normal(0, 1.0, n)


def answers_of(out):
    return [(t, m) for t, m in out if t in ("label", "skip")]


def test_each_long_step_is_answered_once_with_its_features_and_the_cells_verdict(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    eng.on_event({"type": "new_cell", "headstage": 0, "cell_id": "A", "sample": 0})
    sweeps = [step_family_sweep(-50.0, seed=1), step_family_sweep(100.0, seed=2, spikes=(0.25, 0.35, 0.47)),
              step_family_sweep(150.0, seed=3, spikes=(0.22, 0.28, 0.35, 0.43, 0.52))]
    v, i = np.concatenate([s[0] for s in sweeps]), np.concatenate([s[1] for s in sweeps])
    run_chunks(eng, v, i, 20_000.0, chunk=20)
    eng.flush()
    got = answers_of(out)
    assert [m["stim_onset_sample"] for _, m in got] == [4000, 24000, 44000]  # each step once, not its APs
    assert all(t == "label" and m["protocol"] == "long_step" for t, m in got)
    amps = [m["features"]["step"]["stim_amp"] for _, m in got]
    assert amps == pytest.approx([-50.0, 100.0, 150.0], abs=1.0)
    assert [m["features"]["step"]["n_spikes"] for _, m in got] == [0, 3, 5]
    last = got[-1][1]
    assert last["cell_id"] == "A" and last["cell"]["evidence"]["long_step"] == 3
    assert last["features"]["cell"]["threshold_i_long_square"] == pytest.approx(100.0, abs=1.0)
    assert last["window_end_sample"] == 44000 + 8000 - 1  # a depolarising step: its own end
    assert got[0][1]["window_end_sample"] == 4000 + 8000 + 10_000 - 1  # hyperpolarising: the rebound window


def test_a_long_step_cut_by_a_gap_is_skipped_and_a_new_cell_restarts_the_verdict(model):
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    v, i = step_family_sweep(100.0, spikes=(0.3,))
    run_chunks(eng, v[:8000], i[:8000], 20_000.0, chunk=20)  # into the step (it began at 4000)
    eng.on_data(0, 9000, 1000, 20_000.0, np.column_stack([v[9000:9020], i[9000:9020]]))  # 1000 samples lost
    assert [(t, m["stim_onset_sample"], m.get("reason")) for t, m in answers_of(out)] == [("skip", 4000, "gap")]
    eng.on_event({"type": "new_cell", "headstage": 0, "cell_id": "B", "sample": 40_000})
    v2, i2 = step_family_sweep(50.0, seed=4)
    run_chunks(eng, v2, i2, 20_000.0, chunk=20, start=40_000, seq0=2000)  # after a second gap
    eng.flush()
    got = answers_of(out)
    assert got[-1][1]["cell_id"] == "B" and got[-1][1]["stim_onset_sample"] == 44_000
    assert got[-1][1]["cell"]["evidence"]["long_step"] == 1  # a fresh verdict
    keys = [m["stim_onset_sample"] for _, m in got]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_step_families_get_one_answer_per_stimulus_and_never_an_exception(model, seed):
    """Steps of random length (1 ms to 3 s, past --max-step-s), amplitude (-300 to 300 pA, a few pA
    included), noise, random chunk sizes and a gap: every stimulus the engine opened is answered
    exactly once, shutdown included, and no step is answered as two."""
    rng = np.random.default_rng(seed)
    fs = 20_000.0
    parts_v, parts_i = [], []
    for _ in range(12):
        gap = int(rng.uniform(0.05, 0.6) * fs)
        length = int(rng.choice([0.001, 0.003, 0.05, 0.4, 1.0, 3.0]) * fs)
        amp = float(rng.choice([-300, -100, -25, -8, 8, 25, 100, 300]))
        i = np.r_[np.zeros(gap), np.full(length, amp)] + rng.normal(0, 1.0, gap + length)
        v = -70 + 0.1 * np.r_[np.zeros(gap), np.full(length, amp)] + rng.normal(0, 0.1, gap + length)
        parts_v.append(v)
        parts_i.append(i)
    v, i = np.concatenate(parts_v), np.concatenate(parts_i)
    out, emit = collect()
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), emit)
    a, k = 0, 0
    while a < len(v):
        n = int(rng.integers(1, 400))
        if k == 40:  # one gap: 500 samples lost
            a += 500
        eng.on_data(0, a, None, fs, np.column_stack([v[a:a + n], i[a:a + n]]))
        eng.classify_ready()
        a, k = a + n, k + 1
    eng.flush()
    got = answers_of(out)
    keys = [m["stim_onset_sample"] for _, m in got]
    assert len(keys) == len(set(keys)), "a stimulus answered twice"
    assert eng.headstages[0].pending == [] and eng.step_jobs == []
    assert all(m["reason"] in ("no_spike", "qc", "gap", "shutdown", "late") for t, m in got if t == "skip")
    assert any(m.get("protocol") == "long_step" for t, m in got if t == "label")
