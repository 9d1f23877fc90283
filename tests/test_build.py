"""NWB -> dataset -> model -> labels back in the NWB: an Allen-layout folder and a DANDI-like NWB 2 file."""
import csv
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import write_allen_file, write_nwb2_file
from rtclassify.cli import main as rtclassify_main
from rtclassify.formats.stimuli import find_short_square, is_short_square_name
from rtclassify.simulator.neurons import model_ap
from rtclassify.dsp.windows import WindowSpec
from trainer.build import build_dataset, load_built

FS_ALLEN = 200_000.0
FS_DANDI = 50_000.0
ONSET_DANDI = 4000  # sample of the 3 ms step in the NWB 2 file


def dandi_sweeps(ap, delay_s, n_sweeps=3, seed=0):
    """(v mV, i pA) sweeps at 50 kHz: test pulse, a 3 ms step at ONSET_DANDI, the AP (last sweep passive)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_sweeps):
        n = 12_000
        i = np.zeros(n)
        i[500:1000] = -20.0
        i[ONSET_DANDI:ONSET_DANDI + 150] = 600.0
        v = np.full(n, -68.0) + rng.normal(0, 0.05, n)
        if k < n_sweeps - 1:
            a = ONSET_DANDI + int(delay_s * FS_DANDI) - 50
            v[a:a + len(ap)] = ap
        out.append((v, i))
    return out


@pytest.fixture(scope="module")
def nwb_folder(tmp_path_factory):
    """Two Allen-layout cells (200 kHz), one DANDI-like NWB 2 cell (50 kHz), one corrupt file, labels."""
    root = tmp_path_factory.mktemp("nwb")
    ap_rs, delay_rs, _ = model_ap("RS", FS_ALLEN)
    ap_fs, delay_fs, _ = model_ap("FS", FS_ALLEN)
    write_allen_file(root / "111.nwb", ap_rs, FS_ALLEN, stim_to_peak_s=delay_rs, n_sweeps=3, seed=1)
    write_allen_file(root / "222.nwb", ap_fs, FS_ALLEN, stim_to_peak_s=delay_fs, n_sweeps=3, seed=2)
    ap50, delay50, _ = model_ap("LTS", FS_DANDI)
    write_nwb2_file(root / "sub-1_ses-333_icephys.nwb", dandi_sweeps(ap50, delay50), FS_DANDI)
    (root / "broken.nwb").write_bytes(b"\x89HDF\r\n not really")
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell_id", "line_name", "dendrite_type"])
        w.writerows([["111", "Rorb-IRES2-Cre", "spiny"], ["222", "Pvalb-IRES-Cre", "aspiny"],
                     ["sub-1_ses-333_icephys", "Sst-IRES-Cre/wt;Ai14(RCL-tdT)/wt", "aspiny"]])
    return root, labels


def test_short_squares_are_found_by_name_and_by_command():
    assert is_short_square_name("C1SSFINEST150112") and is_short_square_name("X6SP_Rheo")
    assert not is_short_square_name("C1LSCOARSE150216") and not is_short_square_name("C1SSTRIPLE150112")
    i = np.zeros(10_000)
    i[100:400] = -20.0  # test pulse: ignored
    i[5000:5150] = 500.0  # 3 ms at 50 kHz
    found = find_short_square("Long Square", i, 50_000.0)  # name says otherwise; the command decides
    assert (found.onset, found.offset, found.by_name) == (5000, 5150, False)
    i[6000:8000] = 500.0  # a second, long step: not a short square
    assert find_short_square("Short Square", i, 50_000.0) is None


def test_build_both_window_modes_onsets_within_one_sample(nwb_folder, tmp_path):
    root, labels = nwb_folder
    stim = build_dataset(root, labels, tmp_path / "stim.npz", WindowSpec("stimulus", 25.0, 25.0, 50_000.0), workers=2)
    assert stim["files"] == 4 and list(stim["failed"]) == ["broken.nwb"]
    assert stim["cells"] == 3 and stim["windows"] == 6  # two spiking sweeps per cell; the passive one skipped
    z = np.load(tmp_path / "stim.npz")
    for cell, onset_s in (("111", 1.02), ("222", 1.02), ("sub-1_ses-333_icephys", ONSET_DANDI / FS_DANDI)):
        sel = z["cell_id"] == cell
        assert np.all(np.abs(z["onset_s"][sel] - onset_s) <= 1 / z["fs_native"][sel])
    # at the native rate the window is the recording itself, starting 25 ms before the onset
    from rtclassify.formats.nwb import read_sweeps

    s0 = read_sweeps(root / "sub-1_ses-333_icephys.nwb")[0]
    first = np.flatnonzero(z["cell_id"] == "sub-1_ses-333_icephys")[0]
    assert np.allclose(z["windows"][first], s0.response[ONSET_DANDI - 1250:ONSET_DANDI + 1250], atol=1e-4)
    peak = build_dataset(root, labels, tmp_path / "peak.npz", WindowSpec("peak", 1.0, 2.0, 50_000.0), workers=1)
    zp = np.load(tmp_path / "peak.npz")
    assert peak["windows"] == 6 and zp["windows"].shape == (6, 150)
    assert np.all(zp["windows"].argmax(axis=1) == 50)  # the AP peak sits at the anchor


def test_interrupted_build_resumes_without_redoing_files(nwb_folder, tmp_path):
    root, labels = nwb_folder
    spec = WindowSpec("stimulus", 25.0, 25.0, 50_000.0)
    seen = []

    def stop_after_two(done, total, name):
        seen.append(name)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(root, labels, tmp_path / "d.npz", spec, workers=1, progress=stop_after_two)
    parts = sorted(p.name for p in (tmp_path / "d.npz.parts").glob("*.nwb.npz"))
    assert len(parts) == 2
    rest = []
    summary = build_dataset(root, labels, tmp_path / "d.npz", spec, workers=1,
                            progress=lambda d, t, name: rest.append(name))
    assert sorted(rest + seen) == sorted(p.name for p in root.glob("*.nwb")) and summary["windows"] == 6
    with pytest.raises(ValueError, match="another window spec"):
        build_dataset(root, labels, tmp_path / "d.npz", WindowSpec("peak", 1.0, 2.0, 50_000.0))


@pytest.mark.slow
def test_train_on_a_build_then_annotate_the_files(nwb_folder, tmp_path):
    root, labels = nwb_folder
    runner = CliRunner()
    from trainer.__main__ import main as trainer_main

    result = runner.invoke(trainer_main, ["build", str(root), "--labels", str(labels), "--out",
                                          str(tmp_path / "stim.npz"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "6 windows from 3 cells; 1 files failed" in result.output
    data = load_built(tmp_path / "stim.npz")
    assert data.windows.shape == (6, 2500) and data.spec.anchor == "stimulus"
    result = runner.invoke(trainer_main, ["train", "--task", "broad2", "--data", str(tmp_path / "stim.npz"),
                                          "--out", str(tmp_path / "m.pt"), "--epochs", "2", "--channels", "4"])
    assert result.exit_code == 0, result.output
    copies = tmp_path / "annotated"
    result = runner.invoke(rtclassify_main, ["annotate", "--model", str(tmp_path / "m.pt"), "--out-dir", str(copies),
                                             str(root / "111.nwb"), str(root / "sub-1_ses-333_icephys.nwb")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.strip().splitlines()]
    assert [x["labels"] for x in lines] == [2, 2]
    # NWB 2: a pynwb-readable table in a processing module, the recording untouched
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(copies / "sub-1_ses-333_icephys.nwb"), "r") as io:
        nwb = io.read()
        df = nwb.processing["rtclassify"]["labels"].to_dataframe()
        assert list(df["sweep_number"]) == [0, 1] and set(df["label"]) <= {"Exc", "Inh"}
        assert np.allclose(df["p_Exc"] + df["p_Inh"], 1.0, atol=1e-5)
        top = np.maximum(df["p_Exc"], df["p_Inh"])  # this file's card has no trust section: the default 0.9
        assert list(df["uncertain"]) == list(top < 0.9)
        original = dandi_sweeps(*model_ap("LTS", FS_DANDI)[:2])[0][0]
        assert np.allclose(nwb.acquisition["data_00000_AD0"].data[:] * 1e3, original, atol=1e-3)
    # NWB 1: the same columns under /processing/rtclassify/labels
    with h5py.File(copies / "111.nwb", "r") as h:
        assert list(h["processing/rtclassify/labels/sweep_number"][()]) == [0, 1]
    # annotating twice is refused with the reason
    again = runner.invoke(rtclassify_main, ["annotate", "--model", str(tmp_path / "m.pt"),
                                            str(copies / "sub-1_ses-333_icephys.nwb")])
    assert again.exit_code == 1 and "already has a processing module" in again.output
    # and the sweeps listing still reads the annotated file
    listed = subprocess.run([sys.executable, "-m", "rtclassify", "sweeps", str(copies / "111.nwb")],
                            capture_output=True, text=True)
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 3


@pytest.mark.slow
def test_build_on_an_existing_dask_cluster(nwb_folder, tmp_path):
    """The same build on a Dask scheduler given by its address (a real local cluster on loopback)."""
    distributed = pytest.importorskip("distributed", reason="Dask builds need: pip install 'dask[distributed]'")
    root, labels = nwb_folder
    spec = WindowSpec("stimulus", 25.0, 25.0, 50_000.0)
    local = build_dataset(root, labels, tmp_path / "local.npz", spec, workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        remote = build_dataset(root, labels, tmp_path / "dask.npz", spec, scheduler=cluster.scheduler_address)
    assert remote == local
    a, b = np.load(tmp_path / "local.npz"), np.load(tmp_path / "dask.npz")
    assert np.array_equal(a["windows"], b["windows"]) and np.array_equal(a["cell_id"], b["cell_id"])


def test_build_leaves_out_sweeps_whose_ap_a_pulse_edge_hides(evoked_dir, tmp_path):
    """A DANDI-like cell whose sweeps carry a real AP riding on a large bridge artefact, still
    rising when the pulse ends: no window, the reason counted in the summary."""
    z = np.load(evoked_dir / "1544582617.589_41_0_1.105.npz")  # 50 kHz, cut at the pulse onset
    v_rec, i_rec = z["v"].astype(np.float64) * 1e3, z["i"].astype(np.float64) * 1e12
    sweeps = []
    for k in range(2):
        i = np.full(12_000, i_rec[-1])
        i[500:1000] -= 20.0  # test pulse
        v = np.full(12_000, v_rec[-1]) + np.random.default_rng(k).normal(0, 0.05, 12_000)
        i[ONSET_DANDI:ONSET_DANDI + len(i_rec)] = i_rec
        v[ONSET_DANDI:ONSET_DANDI + len(v_rec)] = v_rec
        sweeps.append((v, i))
    write_nwb2_file(tmp_path / "sub-9_ses-999_icephys.nwb", sweeps, FS_DANDI)
    labels = tmp_path / "labels.csv"
    labels.write_text("cell_id,line_name,dendrite_type\nsub-9_ses-999_icephys,Sst-IRES-Cre,aspiny\n")
    summary = build_dataset(tmp_path, labels, tmp_path / "out.npz", WindowSpec("peak", 1.0, 2.0, 50_000.0), workers=1)
    assert summary["windows"] == 0
    assert summary["skip_reasons"] == {"AP peak hidden by a stimulus edge (obscured)": 2}
