import csv
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from rtclassify.cli import main
from trainer.labels import TASKS, assign_labels


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def make_folder(tmp_path, spikes_dir, per_class=4):
    """A folder in the shared layout: real cells of every genetic5 class, plus broken rows."""
    with open(spikes_dir / "cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    labels = assign_labels([c["line_name"] for c in cells], [c["dendrite_type"] for c in cells], TASKS["genetic5"])
    chosen, truth = [], {}
    for cls in TASKS["genetic5"].classes:
        picks = [c for c, lab in zip(cells, labels) if lab == cls][:per_class]
        chosen += picks
        truth.update({c["specimen_id"]: cls for c in picks})
    out = tmp_path / "data"
    (out / "traces").mkdir(parents=True)
    for c in chosen:
        shutil.copy(spikes_dir / "traces" / f"{c['specimen_id']}.npy", out / "traces")
    np.save(out / "traces" / "bad_nan.npy", np.full(150, np.nan, dtype=np.float32))
    rows = [(c["specimen_id"], c["fs_hz"]) for c in chosen]
    rows.insert(3, ("no_such_trace", "50000"))
    rows.insert(7, ("bad_nan", "50000"))
    (out / "cells.csv").write_text("specimen_id,fs_hz\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return out, [r[0] for r in rows], truth


def test_predict_writes_one_row_per_cell_in_order(tmp_path, spikes_dir):
    folder, order, truth = make_folder(tmp_path, spikes_dir)
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(main, ["predict", "--model", "genetic5", "--data", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["specimen_id"] for r in rows] == order
    assert list(rows[0]) == ["specimen_id", "label", "p_Exc", "p_Ndnf", "p_Pvalb", "p_Sst", "p_Vip", "error",
                             "envelope", "evidence", "uncertain", "trace_error"]
    assert all(r["evidence"] == "ap" for r in rows if not r["error"])  # no feature columns: the AP alone
    assert all(r["envelope"] == "" for r in rows if r["error"])  # no label, nothing to judge
    by_id = {r["specimen_id"]: r for r in rows}
    assert "not found" in by_id["no_such_trace"]["error"] and by_id["no_such_trace"]["label"] == ""
    assert "NaN" in by_id["bad_nan"]["error"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == len(truth)
    for r in good:
        p = np.array([float(r[f"p_{c}"]) for c in ("Exc", "Ndnf", "Pvalb", "Sst", "Vip")])
        assert abs(p.sum() - 1) < 1e-4
        assert r["label"] == ("Exc", "Ndnf", "Pvalb", "Sst", "Vip")[int(p.argmax())]
    # these cells were in the training data: this checks the pipeline (rates, resampling, order), not accuracy
    hits = sum(r["label"] == truth[r["specimen_id"]] for r in good)
    assert hits >= 0.7 * len(good)
    assert sum(r["envelope"] == "inside" for r in good) >= 0.9 * len(good)  # Allen's own rig is inside


def test_predict_broad2_labels(tmp_path, spikes_dir):
    folder, _, _ = make_folder(tmp_path, spikes_dir, per_class=2)
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(main, ["predict", "--model", "broad2", "--data", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert {r["label"] for r in rows if not r["error"]} <= {"Exc", "Inh"}
    assert "p_Inh" in rows[0]


@pytest.mark.parametrize("args, message", [
    (["--model", "genetic5", "--data", "/nonexistent/folder"], "does not exist"),
    (["--model", "genetic7", "--data", "."], "neither a built-in model"),
])
def test_unusable_inputs_fail_with_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["predict", *args, "--out", str(tmp_path / "x.csv")])
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_help_lists_every_option():
    result = CliRunner().invoke(main, ["predict", "--help"])
    for opt in ("--model", "--data", "--out", "--device"):
        assert opt in result.output


def test_a_rate_below_10_khz_is_refused_per_row(tmp_path):
    """At 8 kHz an AP's upstroke spans about two samples: the row gets an error, not a label."""
    folder = tmp_path / "cells"
    (folder / "traces").mkdir(parents=True)
    t = (np.arange(24) - 8) / 8.0  # ms from the peak, 8 kHz, 1 ms before to 2 ms after
    np.save(folder / "traces" / "a.npy", -65 + 95 * np.exp(-(t / 0.4) ** 2))
    (folder / "cells.csv").write_text("specimen_id,fs_hz\na,8000\n")
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(main, ["predict", "--data", str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    row = read_rows(out)[0]
    assert row["label"] == "" and "8000" in row["error"] and "10000" in row["error"]


def test_an_output_folder_that_does_not_exist_is_a_command_line_error(tmp_path, spikes_dir):
    r = CliRunner().invoke(main, ["predict", "--data", str(spikes_dir), "--out", str(tmp_path / "no" / "x.csv")])
    assert r.exit_code == 2 and "does not exist" in r.output and len(r.output.splitlines()) == 1
