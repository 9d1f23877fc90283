"""NWB reading: the real MIES / NWB 2 fixtures, and an Allen-layout file written here."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import NWB_FIXTURES, need
from rtclassify.cli import main
from rtclassify.io.nwb import NwbError, read_sweeps


@pytest.mark.parametrize("name, mode, fs, n", [
    ("2018_03_20_0005.nwb", "current", 50_000.0, 900_000),
    ("H18.03.315.11.11.01.05.nwb", "voltage", 200_000.0, 66_000),
    ("Sst-IRES-CreAi14-395722.01.01.01.nwb", "voltage", 200_000.0, 66_000),
    ("valid_v2_MIES-NWBv2-0655f7e4.nwb", "voltage", 200_000.0, 188_001),
])
def test_every_fixture_is_listed(name, mode, fs, n):
    path = need(NWB_FIXTURES / name)
    result = CliRunner().invoke(main, ["sweeps", str(path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.strip().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert set(line) == {"sweep", "stimulus", "clamp_mode", "fs", "n_samples", "stim_onset_s", "n_spikes"}
    assert (line["clamp_mode"], line["fs"], line["n_samples"]) == (mode, fs, n)
    if mode == "voltage":
        assert line["stim_onset_s"] is None and line["n_spikes"] is None


def write_allen_file(path, ap_mv, fs, onset_s=1.02, stim_to_peak_s=0.0032, n_sweeps=2):
    """A small file in the Allen Cell Types NWB 1 layout: test pulse, then a 3 ms short square."""
    n = int(1.2 * fs)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h:
        h.attrs["nwb_version"] = "NWB-1.0.5"
        for k in range(n_sweeps):
            i = np.zeros(n)
            i[int(0.01 * fs):int(0.02 * fs)] = -20.0  # test pulse, pA
            on = int(onset_s * fs)
            i[on:on + int(0.003 * fs)] = 700.0
            v = np.full(n, -70.0) + rng.normal(0, 0.05, n)
            if k == 0:  # sweep 0 spikes, sweep 1 is subthreshold
                peak = on + int(stim_to_peak_s * fs)
                a = peak - int(0.001 * fs)
                v[a:a + len(ap_mv)] = ap_mv
            g = h.create_group(f"acquisition/timeseries/Sweep_{k}")
            d = g.create_dataset("data", data=(v / 1e3).astype(np.float32))
            d.attrs["unit"], d.attrs["conversion"] = "Volts", 1.0
            g.create_dataset("starting_time", data=0.0).attrs["rate"] = fs
            s = h.create_group(f"stimulus/presentation/Sweep_{k}")
            s.attrs["aibs_stimulus_name"] = "Short Square"
            d = s.create_dataset("data", data=(i / 1e12).astype(np.float32))
            d.attrs["unit"], d.attrs["conversion"] = "Amps", 1.0
            s.create_dataset("starting_time", data=0.0).attrs["rate"] = fs


def test_allen_layout_short_square_onset_and_spikes(spikes_dir, tmp_path):
    fs = 200_000.0
    ap = next(np.load(p) for p in sorted((spikes_dir / "traces").glob("*.npy")) if len(np.load(p)) == 600)
    write_allen_file(tmp_path / "cell.nwb", ap.astype(np.float64), fs)
    result = CliRunner().invoke(main, ["sweeps", str(tmp_path / "cell.nwb")])
    lines = [json.loads(x) for x in result.output.strip().splitlines()]
    assert [x["sweep"] for x in lines] == [0, 1]
    for x in lines:
        assert x["stimulus"] == "Short Square" and x["clamp_mode"] == "current"
        assert abs(x["stim_onset_s"] - 1.02) <= 1 / fs  # within one sample; the test pulse is not the onset
    assert [x["n_spikes"] for x in lines] == [1, 0]


def test_corrupt_and_unknown_files_are_refused_by_name(tmp_path):
    (tmp_path / "junk.nwb").write_bytes(b"junk")
    with pytest.raises(NwbError, match="junk.nwb: not a readable"):
        read_sweeps(tmp_path / "junk.nwb")
    with h5py.File(tmp_path / "other.nwb", "w") as h:
        h.attrs["nwb_version"] = "0.9"
    result = CliRunner().invoke(main, ["sweeps", str(tmp_path / "other.nwb")])
    assert result.exit_code != 0 and "unknown NWB layout" in result.output
