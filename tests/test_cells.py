import numpy as np
import pytest

from rtclassify.formats.spike_folder import CellError, CellRow, load_cell_window, read_cells_table
from rtclassify.dsp.windows import WindowSpec


def write_folder(tmp_path, rows, traces):
    (tmp_path / "traces").mkdir()
    lines = ["specimen_id,fs_hz"] + [f"{sid},{fs}" for sid, fs in rows]
    (tmp_path / "cells.csv").write_text("\n".join(lines) + "\n")
    for sid, arr in traces.items():
        np.save(tmp_path / "traces" / f"{sid}.npy", arr)
    return tmp_path


def ap(fs):
    n = int(round(3e-3 * fs))
    t = np.arange(n) / fs - 1e-3
    return (-60 + 100 * np.exp(-(t / 2e-4) ** 2)).astype(np.float32)


def test_each_bad_row_gets_its_own_reason(tmp_path):
    folder = write_folder(tmp_path, [("ok", 50000), ("missing", 50000), ("short", 50000), ("nan", 200000),
                                     ("volts", 50000), ("norate", "")],
                          {"ok": ap(50000), "short": ap(50000)[:100], "nan": np.where(np.arange(600) == 7, np.nan, ap(200000)),
                           "volts": ap(50000) / 1000, "norate": ap(50000)})
    rows = read_cells_table(folder)
    spec = WindowSpec()
    assert load_cell_window(folder, rows[0], spec).shape == (150,)
    expected = {"missing": "not found", "short": "expected 150", "nan": "NaN", "volts": "volts", "norate": "sampling rate"}
    for row in rows[1:]:
        with pytest.raises(CellError, match=expected[row.specimen_id]):
            load_cell_window(folder, row, spec)


def test_missing_table_or_column_is_a_folder_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cells.csv"):
        read_cells_table(tmp_path)
    (tmp_path / "cells.csv").write_text("specimen_id,rate\n1,50000\n")
    with pytest.raises(ValueError, match="fs_hz"):
        read_cells_table(tmp_path)


def test_real_traces_window_with_the_peak_at_the_anchor(spikes_dir):
    rows = read_cells_table(spikes_dir)
    spec = WindowSpec()
    by_rate = {}
    for row in rows:
        by_rate.setdefault(row.fs_hz, row)
    assert set(by_rate) == {50000.0, 200000.0}
    for row in by_rate.values():
        w = load_cell_window(spikes_dir, row, spec)
        assert abs(int(np.argmax(w)) - spec.n_before) <= 1


def test_peak_anchor_only(tmp_path):
    with pytest.raises(CellError, match="anchored"):
        load_cell_window(tmp_path, CellRow("1", 50000.0, {}), WindowSpec(anchor="stimulus", before_ms=25, after_ms=25))


@pytest.mark.parametrize("name", ["flat", "noise", "hum", "step", "epsp", "inverted", "clipped"])
def test_a_trace_that_is_not_an_action_potential_gets_no_class(tmp_path, name):
    """The network would label any 3 ms of numbers: these get the reason instead (predict's error)."""
    fs, n = 50_000.0, 150
    t = (np.arange(n) - 50) / 50.0  # ms from the expected peak
    spike = -65 + 95 * np.where(t < 0, np.exp(-(t / 0.3) ** 2), np.exp(-(t / 0.7) ** 2))
    rng = np.random.default_rng(1)
    trace = {"flat": np.full(n, -70.0), "noise": -70 + rng.normal(0, 2, n),
             "hum": -70 + 3 * np.sin(2 * np.pi * 0.05 * t), "step": np.where(t < 0, -70.0, -10.0),
             "epsp": -70 + 8 * np.exp(-((t - 0.5) / 1.0) ** 2), "inverted": -130 - spike,
             "clipped": np.minimum(spike, -20.0)}[name]
    folder = write_folder(tmp_path, [(name, 50000), ("real", 50000)], {name: trace, "real": spike})
    rows = read_cells_table(folder)
    with pytest.raises(CellError, match="action potential"):
        load_cell_window(folder, rows[0], WindowSpec())
    assert load_cell_window(folder, rows[1], WindowSpec()).shape == (150,)  # the same layout with an AP passes


def test_nearly_every_real_allen_ap_passes_the_check(spikes_dir):
    from rtclassify.dsp.ap_check import ap_problem
    from rtclassify.dsp.windows import samples_at

    rows = read_cells_table(spikes_dir)
    refused = [r.specimen_id for r in rows
               if ap_problem(np.load(spikes_dir / "traces" / f"{r.specimen_id}.npy"), r.fs_hz,
                             samples_at(1.0, r.fs_hz))]
    assert len(refused) <= 4 and "517752298" in refused  # that one spans 0.2 mV: no AP at all


def test_real_aps_at_low_rates_pass_the_check(spikes_dir):
    """At 10 kHz one sample lasts the whole clipping limit (a lone top sample is an AP's peak, not a clip),
    and a fast AP's steepest sample is often its last rising one (the detector must still see it)."""
    from rtclassify.dsp.ap_check import ap_problem
    from rtclassify.dsp.windows import resample_trace, samples_at

    rows = [r for r in read_cells_table(spikes_dir) if r.fs_hz == 50000.0][:40]
    for fs in (10_000.0, 12_500.0, 20_000.0):  # the rates the models take (from 10 kHz)
        refused = []
        for r in rows:
            v = resample_trace(np.load(spikes_dir / "traces" / f"{r.specimen_id}.npy").astype(np.float64), r.fs_hz, fs)
            why = ap_problem(v, fs, int(np.argmax(v)))
            refused += [why] if why else []
        assert not refused, (fs, refused[:3])
    clipped = np.array([-70.0, -40.0, 20.0, 20.0, 20.0, -30.0, -60.0])  # three samples at the top at 10 kHz
    assert "clipped" in (ap_problem(np.concatenate([np.full(10, -70.0), clipped, np.full(13, -70.0)]), 10_000.0, 12)
                         or "")
