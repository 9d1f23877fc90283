"""Exactly one answer per stimulus onset, whatever order data and events arrive in (the engine
directly: every order is set up exactly), new_cell from its sample, and any sampling rate."""
import numpy as np
import pytest

from helpers import spike_sweep
from rtclassify.daemon.engine import Engine, ServeConfig
from rtclassify.model.file_format import load_model

UNHURRIED = 1e9  # never shed a window as late: these tests are not about this machine's load
FS = 50_000.0


@pytest.fixture(scope="module")
def model():
    return load_model("genetic5")


def engine(model, **cfg):
    out = []
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED, **cfg), lambda topic, msg: out.append((topic, msg)))
    return eng, out


def answers(out):
    return [m for t, m in out if t in ("label", "skip")]


def sweeps(n, fs=FS, spikes=None):
    """(v, i, onsets) of n back-to-back 60 ms sweeps, each with a 3 ms step 10 ms in."""
    length, onset = int(0.06 * fs), int(0.01 * fs)
    parts = [spike_sweep(fs=fs, n=length, onset=onset, spike=True if spikes is None else spikes[k], seed=k)
             for k in range(n)]
    v = np.concatenate([p[0] for p in parts])
    i = np.concatenate([p[1] for p in parts])
    return v, i, [k * length + onset for k in range(n)]


def feed(eng, v, i, fs=FS, chunk=50, start=0, events=None, headstage=0):
    """Stream v, i in chunks; events: {chunk index: [event, ...]} sent before that chunk."""
    events = events or {}
    for k, a in enumerate(range(0, len(v), chunk)):
        for e in events.get(k, []):
            eng.on_event({"headstage": headstage, **e})
        eng.on_data(headstage, start + a, k, fs, np.column_stack([v[a:a + chunk], i[a:a + chunk]]))
        eng.classify_ready()
    for k in sorted(k for k in events if k * chunk >= len(v)):  # events later than the last data
        for e in events[k]:
            eng.on_event({"headstage": headstage, **e})
    eng.flush()


def stim(sample):
    return {"type": "stimulus", "sample": int(sample)}


@pytest.mark.parametrize("lag_chunks", [-20, -1, 0, 1, 3, 8, 30, 200])
def test_stimulus_events_early_with_or_late_give_one_answer_each(model, lag_chunks):
    """Events `lag_chunks` 1 ms chunks after (negative: before) the chunk holding the onset, the
    I channel showing the same steps: every onset is answered once, at its own sample."""
    v, i, onsets = sweeps(4)
    events = {}
    for o in onsets:
        events.setdefault(max(0, o // 50 + lag_chunks), []).append(stim(o))
    eng, out = engine(model)
    feed(eng, v, i, events=events)
    got = answers(out)
    assert sorted(m["stim_onset_sample"] for m in got) == onsets
    assert all(m["schema"] == "rtclassify.label/1" for m in got)
    hb = eng.heartbeat()["headstages"]["0"]["events"]
    after = 4 if lag_chunks >= 1 else 0  # events behind their data: late, and already found on the I channel
    assert hb["stimulus"] == 4 and hb["duplicate"] == after and hb["late"] == after


def test_duplicated_and_out_of_order_events_are_counted_not_answered_twice(model):
    v, i, onsets = sweeps(3)
    flat = np.zeros_like(i)  # no steps on the channel: the events are the only onsets
    events = {0: [stim(onsets[1]), stim(onsets[0]), stim(onsets[0])], 40: [stim(onsets[2]), stim(onsets[1] + 3)]}
    eng, out = engine(model)
    feed(eng, v, flat, events=events)
    assert sorted(m["stim_onset_sample"] for m in answers(out)) == onsets
    ev = eng.heartbeat()["headstages"]["0"]["events"]
    assert ev["duplicate"] == 2 and ev["out_of_order"] == 3 and ev["stimulus"] == 5  # below the latest event's sample


def test_an_event_later_than_the_buffer_gets_one_late_skip(model):
    v, i, onsets = sweeps(2)
    eng, out = engine(model, buffer_s=0.05, max_step_s=0.0, onsets="events")  # no room kept for long steps
    feed_events = {len(v) // 50 - 1: [stim(onsets[0])]}  # 110 ms after the first onset; 50 ms buffer
    feed(eng, v, np.zeros_like(i), events=feed_events)
    got = answers(out)
    assert [(m["stim_onset_sample"], m["reason"]) for m in got] == [(onsets[0], "late")]


def test_an_event_after_the_channel_answer_is_a_duplicate(model):
    """The old failure: a late event after the channel scan had answered gave a second answer and
    switched the scan off; here the channel keeps finding the later steps."""
    v, i, onsets = sweeps(3)
    eng, out = engine(model)
    late = {onsets[0] // 50 + 40: [stim(onsets[0])]}  # 40 ms late: the label went out long before
    feed(eng, v, i, events=late)
    assert sorted(m["stim_onset_sample"] for m in answers(out)) == onsets


def test_onsets_channel_mode_ignores_events_and_events_mode_ignores_the_channel(model):
    v, i, onsets = sweeps(2)
    eng, out = engine(model, onsets="channel")
    feed(eng, v, i, events={0: [stim(onsets[0] + 500)]})  # a bogus event, 10 ms after the real onset
    assert sorted(m["stim_onset_sample"] for m in answers(out)) == onsets
    assert eng.heartbeat()["headstages"]["0"]["events"]["ignored"] == 1
    eng, out = engine(model, onsets="events")
    feed(eng, v, i, events={0: [stim(onsets[1])]})
    assert [m["stim_onset_sample"] for m in answers(out)] == [onsets[1]]


def test_an_event_sample_replaces_the_channel_onset_while_open(model):
    v, i, onsets = sweeps(1)
    eng, out = engine(model)
    first = onsets[0] // 50
    feed(eng, v, i, events={first + 1: [stim(onsets[0] - 2)]})  # 2 samples earlier than the step on I
    assert [m["stim_onset_sample"] for m in answers(out)] == [onsets[0] - 2]


@pytest.mark.parametrize("early_ms", [0.0, 5.0, 40.0, 200.0])
def test_new_cell_applies_from_its_sample_however_early(model, early_ms):
    """Cells A, B, C of two sweeps each; new_cell sent early_ms ahead of its sample."""
    v, i, onsets = sweeps(6)
    length = len(v) // 6
    events = {}
    for c, cell in enumerate("ABC"):
        start = 2 * c * length
        events.setdefault(max(0, int((start - early_ms * FS / 1e3) // 50)), []).append(
            {"type": "new_cell", "cell_id": cell, "sample": start})
    eng, out = engine(model)
    feed(eng, v, i, events=events)
    labels = [m for t, m in out if t == "label"]
    assert [(m["cell_id"], m["cell"]["n_windows"]) for m in labels] == [
        ("A", 1), ("A", 2), ("B", 1), ("B", 2), ("C", 1), ("C", 2)]


def test_new_cell_announced_late_takes_only_unanswered_windows(model):
    v, i, onsets = sweeps(3)
    length = len(v) // 3
    eng, out = engine(model)
    # B starts at sweep 1 but is announced only during sweep 2: sweep 1's label already went to A
    events = {0: [{"type": "new_cell", "cell_id": "A", "sample": 0}],
              (2 * length) // 50 + 5: [{"type": "new_cell", "cell_id": "B", "sample": length}]}
    feed(eng, v, i, events=events)
    assert [m["cell_id"] for m in answers(out)] == ["A", "A", "B"]
    assert eng.heartbeat()["headstages"]["0"]["events"]["late"] == 1


@pytest.mark.parametrize("fs", [20_000.0, 25_000.0, 100_000.0 / 3, 33_333.0, 50_000.0, 100_000.0, 200_000.0, 44_100.0])
def test_any_common_rate_is_classified_like_the_model_rate(model, fs):
    """The same AP at the stream's rate: one label per onset, probabilities close to the 50 kHz run's."""
    v, i, onsets = sweeps(2, fs=fs)
    eng, out = engine(model)
    feed(eng, v, i, fs=fs, chunk=max(1, int(fs / 1000)))
    got = answers(out)
    assert sorted(m["stim_onset_sample"] for m in got) == onsets
    assert all(m["schema"] == "rtclassify.label/1" for m in got), got
    ref_eng, ref_out = engine(model)
    rv, ri, _ = sweeps(2)
    feed(ref_eng, rv, ri)
    ref = answers(ref_out)[0]["probs"]
    assert max(abs(got[0]["probs"][c] - ref[c]) for c in ref) < 0.2  # same AP, other sampling grid


def test_an_unusable_rate_is_refused_once_and_its_stimuli_skipped(model):
    warnings = []
    out = []
    eng = Engine(model, ServeConfig(shed_factor=UNHURRIED), lambda t, m: out.append((t, m)), notify=warnings.append)
    fs = 5_000.0
    v, i, onsets = sweeps(3, fs=fs)
    feed(eng, v, i, fs=fs, chunk=5)
    assert len(warnings) == 1 and "5000 Hz" in warnings[0]
    got = answers(out)
    assert [(m["stim_onset_sample"], m["reason"]) for m in got] == [(o, "qc") for o in onsets]
    assert "5000 Hz" in got[0]["detail"] and eng.heartbeat()["headstages"]["0"]["unusable"]


def test_a_backward_jump_is_a_restart_reported_once(model):
    v, i, onsets = sweeps(2)
    eng, out = engine(model)
    half = onsets[0] + 20  # the first stimulus open: onset seen, no AP yet
    for a in range(0, half, 50):
        eng.on_data(0, a, None, FS, np.column_stack([v[a:a + 50], i[a:a + 50]]))
    feed(eng, v, i)  # the source restarted: its count starts again at 0
    got = answers(out)
    assert [(m["stim_onset_sample"], m.get("reason")) for m in got] == [
        (onsets[0], "gap"), (onsets[0], None), (onsets[1], None)]
    hb = eng.heartbeat()["headstages"]["0"]
    assert hb["gaps"] == 1 and hb["restarts"] == 1


def test_events_before_any_data_that_are_one_stimulus_get_one_answer(model):
    """Found by tests/test_hostile_input.py: two stimulus events 2 samples apart, both sent before
    the headstage's first data (its rate unknown yet), were kept as two stimuli."""
    v, i, onsets = sweeps(3, spikes=[False, False, False])
    eng, out = engine(model)
    feed(eng, v, i, events={0: [stim(onsets[2]), stim(onsets[2] + 2)]})
    assert sorted(m["stim_onset_sample"] for m in answers(out)) == onsets
    assert eng.heartbeat()["headstages"]["0"]["events"]["duplicate"] == 1


@pytest.mark.parametrize("offset_ms", [-9.9, -1.0, -0.02, 0.0, 0.02, 1.5, 2.98, 3.3, 4.5, 20.0])
@pytest.mark.parametrize("chunk", [7, 50, 400])
def test_a_daemon_joining_mid_stream_answers_each_onset_it_saw_once_and_no_step_end(model, offset_ms, chunk):
    """The daemon's data begin `offset_ms` from the second sweep's step onset (inside the 3 ms step,
    just before it, between sweeps, inside the AP window): each onset at or after the first sample
    is answered once at its own sample, a step begun before it is not answered at all (its end is
    no onset), and a `stimulus` event for that earlier step, arriving late, gets one skip. Data that
    begin exactly at an onset cannot tell it from a step begun earlier: taken as begun earlier, until
    an event names it (then its samples are all there, and it is labelled)."""
    v, i, onsets = sweeps(4)
    join = onsets[1] + int(round(offset_ms * FS / 1000))
    eng, out = engine(model)
    feed(eng, v[join:], i[join:], chunk=chunk, start=join, events={3: [stim(onsets[1])] if join >= onsets[1] else []})
    got = [(m["stim_onset_sample"], m["schema"]) for m in answers(out)]
    seen = [o for o in onsets if o > join]
    expected = sorted([(o, "rtclassify.label/1") for o in seen]
                      + ([(onsets[1], "rtclassify.skip/1")] if join > onsets[1] else [])
                      + ([(onsets[1], "rtclassify.label/1")] if join == onsets[1] else []))  # its data all came
    assert sorted(got) == expected
    in_step = onsets[1] <= join < onsets[1] + int(0.003 * FS)
    assert eng.heartbeat()["headstages"]["0"]["joined_in_step"] == int(in_step)
