"""NWB reading: the real MIES / NWB 2 fixtures, and an Allen-layout file written here."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import NWB_FIXTURES, need
from helpers import write_allen_file
from rtclassify.cli import main
from rtclassify.formats.nwb import NwbError, read_sweeps


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
    assert set(line) == {"sweep", "channel", "stimulus", "clamp_mode", "fs", "n_samples", "stim_onset_s", "n_spikes",
                         "units", "filter_hz", "rig"}  # channel, units, filter_hz: added with the ABF readers; rig
    assert line["rig"] == {"fs": fs, "filter_hz": line["filter_hz"], "temperature_c": None, "warp": 1.0}
    assert line["channel"] == 0
    assert (line["clamp_mode"], line["fs"], line["n_samples"]) == (mode, fs, n)
    if mode == "voltage":
        assert line["stim_onset_s"] is None and line["n_spikes"] is None


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


@pytest.mark.parametrize("name", ["H18.03.315.11.11.01.05.nwb", "Sst-IRES-CreAi14-395722.01.01.01.nwb",
                                  "valid_v2_MIES-NWBv2-0655f7e4.nwb"])
def test_mies_files_give_the_amplifier_filter_of_their_lab_notebook(name):
    """MIES writes the MultiClamp's low-pass only into its lab notebook ('LPF Cutoff', per headstage);
    these files were recorded with the 10 kHz Bessel (their notebooks, read with h5py by hand)."""
    sweeps = read_sweeps(need(NWB_FIXTURES / name))
    assert sweeps and all(s.filter_hz == 10_000.0 for s in sweeps)


def test_the_notebook_filter_belongs_to_the_headstage_on_that_ad_channel_and_its_last_setting():
    from rtclassify.formats.nwb.mies_notebook import ad_channel, settings_per_sweep

    nan = np.nan
    # rows x headstages 0-2: hs 0 records on AD 0, hs 1 inactive, hs 2 on AD 2; sweep 3 changes hs 2's filter
    sweep = np.array([[0, 0, 0], [0, 0, 0], [3, 3, 3], [3, 3, 3], [3, 3, 3]], float)
    adc = np.array([[0, nan, 2], [nan, nan, nan], [0, nan, 2], [nan, nan, nan], [nan, nan, nan]])
    lpf = np.array([[nan, nan, nan], [10e3, nan, 3e3], [nan, nan, nan], [10e3, nan, 3e3], [nan, nan, 2e3]])
    assert settings_per_sweep(sweep, adc, lpf) == {(0, 0): 10e3, (0, 2): 3e3, (3, 0): 10e3, (3, 2): 2e3}
    assert settings_per_sweep(sweep, adc, np.where(np.isfinite(lpf), 0.0, nan)) == {}  # 0: bypassed, no corner
    assert (ad_channel("data_00012_AD1"), ad_channel("data_00012_AD10"), ad_channel("Sweep_3")) == (1, 10, None)
