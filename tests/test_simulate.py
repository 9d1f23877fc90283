"""The simulated amplifier plays the same stream whether its cells are simulated ahead or as it goes."""
import numpy as np
import pytest

from rtclassify.simulator.neurons import builtin_cells
from rtclassify.simulator.amplifier import HeadstageStream, prepare_streams, run_simulation


class RecordingSink:
    def __init__(self):
        self.data, self.events = [], []

    def send_data(self, headstage, first, fs, v, i):
        self.data.append((headstage, first, v.copy(), i.copy()))

    def send_event(self, event, fs):
        self.events.append(dict(event))


def play(prepare: bool, max_cells: int) -> tuple[RecordingSink, dict]:
    fs = 50_000.0
    cells = builtin_cells(fs)
    streams = [HeadstageStream(h, cells[h::2], fs, 3, 3, np.random.default_rng(10 + h)) for h in range(2)]
    if prepare:
        prepare_streams(streams, max_cells=max_cells)
        assert all(hs.cells_started >= 1 for hs in streams)  # simulated before the first chunk
    sink = RecordingSink()
    return sink, run_simulation(sink, streams, 50, speed=0, max_cells=max_cells)


@pytest.mark.parametrize("max_cells", [2, 3])
def test_cells_simulated_ahead_play_the_same_stream_and_stop_at_the_same_cell(max_cells):
    ahead, counts_ahead = play(True, max_cells)
    as_they_go, counts = play(False, max_cells)
    assert counts_ahead["chunks"] == counts["chunks"] and counts_ahead["stimuli"] == counts["stimuli"] > 0
    assert ahead.events == as_they_go.events
    assert len(ahead.data) == len(as_they_go.data)
    for (h1, f1, v1, i1), (h2, f2, v2, i2) in zip(ahead.data, as_they_go.data):
        assert (h1, f1) == (h2, f2) and np.array_equal(v1, v2) and np.array_equal(i1, i2)
