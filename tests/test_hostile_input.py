"""Hostile input: whatever a sender puts on the wire, the daemon counts it (malformed or ignored, by
reason, in the heartbeat), allocates nothing for it, and still answers every real stimulus once.
Property-based (hypothesis) for the wire parser and for the exactly-once invariant under random
orders of data and events."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import KINDS, MAKERS, valid_header
from rtclassify.daemon.engine import Engine, ServeConfig
from rtclassify.daemon.publish import Publisher
from rtclassify.daemon.service import Daemon
from rtclassify.model.file_format import load_model
from rtclassify.transport.wire import (FS_RANGE_HZ, MAX_CHUNK_SAMPLES, MAX_SAMPLE_INDEX, MalformedMessage, parse_data,
                                       parse_event)
from rtclassify.transport.zmq_source import handle_message
from test_event_orders import FS, UNHURRIED, answers, stim, sweeps

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                     max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def model():
    return load_model("genetic5")


def daemon_for(model, **cfg):
    out = []
    engine = Engine(model, ServeConfig(shed_factor=UNHURRIED, **cfg), lambda topic, msg: out.append((topic, msg)))
    return Daemon(engine, Publisher()), out


DETERMINISTIC = settings(derandomize=True, database=None)  # the same examples in every run and on CI


@DETERMINISTIC
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_as_malformed(header, payload):
    for parse in (lambda: parse_data(header, payload), lambda: parse_event(header)):
        try:
            parse()
        except MalformedMessage as exc:
            assert exc.code and str(exc)


@DETERMINISTIC
@given(st.sampled_from(["headstage", "seq", "first_sample", "n_samples", "fs", "channels", "units", "dtype", "v",
                        "device"]), JSON_VALUES)
def test_any_value_in_any_header_field_parses_within_bounds_or_is_malformed(field, value):
    h = valid_header(np.random.default_rng(0))
    h[field] = value
    n = h["n_samples"] if type(h["n_samples"]) is int and 0 < h["n_samples"] < 1000 else 50
    try:
        c = parse_data(json.dumps(h).encode(), np.zeros((n, 2), "<f4").tobytes())
    except MalformedMessage:
        return
    assert 0 <= c.first_sample <= MAX_SAMPLE_INDEX and FS_RANGE_HZ[0] <= c.fs <= FS_RANGE_HZ[1]
    assert 0 <= c.headstage and 0 < len(c.samples) <= MAX_CHUNK_SAMPLES and np.isfinite(c.samples).all()


@DETERMINISTIC
@given(st.dictionaries(st.sampled_from(["v", "type", "headstage", "sample", "cell_id"]), JSON_VALUES))
def test_any_event_object_parses_to_a_valid_event_or_is_malformed(obj):
    try:
        e = parse_event(json.dumps(obj).encode())
    except MalformedMessage:
        return
    assert e["type"] in ("new_cell", "stimulus") and e["headstage"] >= 0
    assert e["sample"] is None or 0 <= e["sample"] <= MAX_SAMPLE_INDEX


@pytest.mark.parametrize("kind", KINDS)
def test_every_hostile_kind_is_counted_and_allocates_no_headstage(model, kind):
    daemon, out = daemon_for(model)
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(40):
        handle_message(daemon, MAKERS[kind](rng), 0.0)
    refused = daemon.engine.heartbeat()["refused"]
    assert sum(refused["malformed"].values()) + sum(refused["ignored"].values()) == 40, refused
    assert daemon.engine.headstages == {}
    assert not answers(out)
    assert len([t for t, _ in out if t in ("malformed", "ignored")]) == 40  # each logged once


def test_headstage_numbers_beyond_the_maximum_are_ignored_by_reason(model):
    daemon, out = daemon_for(model, max_headstages=2)
    v, i, onsets = sweeps(1)
    chunk = np.column_stack([v[:100], i[:100]])
    daemon.on_data(1, 0, 0, FS, chunk, 0.0)
    daemon.on_data(2, 0, 0, FS, chunk, 0.0)
    daemon.on_event({"type": "new_cell", "headstage": 7, "sample": 0, "cell_id": "c"})
    hb = daemon.engine.heartbeat()
    assert sorted(hb["headstages"]) == ["1"]
    assert hb["refused"]["ignored"] == {"headstage_out_of_range": 2} and hb["refused"]["malformed"] == {}
    assert hb["malformed"] == 0


def test_open_stimuli_per_headstage_are_bounded_and_the_excess_counted(model):
    daemon, out = daemon_for(model, max_pending=5)
    for k in range(8):  # announced ahead of any data: each is open until the data reach it
        daemon.on_event({"type": "stimulus", "headstage": 0, "sample": 1000 * (k + 1)})
    assert len(daemon.engine.headstages[0].pending) == 5
    assert daemon.engine.heartbeat()["refused"]["ignored"] == {"pending_limit": 3}
    daemon.engine.flush()
    assert len(answers(out)) == 5  # the taken ones are still answered, once


def test_an_event_far_ahead_of_the_data_is_ignored(model):
    daemon, out = daemon_for(model, max_ahead_s=1.0)
    v, i, _ = sweeps(1)
    daemon.on_data(0, 0, 0, FS, np.column_stack([v, i]), 0.0)
    daemon.on_event({"type": "stimulus", "headstage": 0, "sample": len(v) + int(2 * FS)})
    daemon.on_event({"type": "stimulus", "headstage": 0, "sample": len(v) + int(0.5 * FS)})  # within: taken
    assert daemon.engine.heartbeat()["refused"]["ignored"] == {"event_too_far_ahead": 1}
    assert len(daemon.engine.headstages[0].pending) == 1


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_exactly_one_answer_per_onset_under_random_orders(model, data):
    """Random chunk sizes, stimulus events for some onsets at random points (early, late, twice,
    up to 0.5 ms off), new_cell events in between: every onset answered once, none invented."""
    spikes = data.draw(st.lists(st.booleans(), min_size=3, max_size=3), label="spikes")
    v, i, onsets = sweeps(3, spikes=spikes)
    flat = data.draw(st.booleans(), label="no steps on the I channel")
    if flat:
        i = np.zeros_like(i)
    sizes = data.draw(st.lists(st.integers(5, 900), min_size=1, max_size=8), label="chunk sizes")
    cuts, pos, k = [], 0, 0
    while pos < len(v):
        cuts.append((pos, min(len(v), pos + sizes[k % len(sizes)])))
        pos, k = cuts[-1][1], k + 1
    events = {}
    for o in onsets:
        copies = data.draw(st.integers(1 if flat else 0, 2), label="event copies")
        for _ in range(copies):
            at = data.draw(st.integers(0, len(cuts)), label="sent before chunk")
            jitter = data.draw(st.integers(-20, 20), label="event sample offset")  # 20 samples = 0.4 ms
            events.setdefault(at, []).append(stim(o + jitter))
    if data.draw(st.booleans(), label="new cell"):
        events.setdefault(data.draw(st.integers(0, len(cuts))), []).append(
            {"type": "new_cell", "sample": data.draw(st.integers(0, len(v))), "cell_id": "b"})
    daemon, out = daemon_for(model)
    for k, (a, b) in enumerate(cuts):
        for e in events.get(k, []):
            daemon.on_event({"headstage": 0, **e})
        daemon.on_data(0, a, k, FS, np.column_stack([v[a:b], i[a:b]]), 0.0)
        daemon.tick()
    for e in events.get(len(cuts), []):
        daemon.on_event({"headstage": 0, **e})
    daemon.engine.flush()
    got = sorted(m["stim_onset_sample"] for m in answers(out))
    assert len(got) == 3 and all(abs(g - o) <= 20 for g, o in zip(got, onsets)), (got, onsets)
