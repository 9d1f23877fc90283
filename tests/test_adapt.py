"""`python -m trainer adapt`: a shipped model fine-tuned on a lab's few labelled cells, usable as any
model file (predict, the daemon), its card saying what it came from and how sure it can be."""
import csv
import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from trainer.__main__ import main as trainer_main


@pytest.fixture(scope="module")
def lab(spikes_dir_module, tmp_path_factory):
    """A lab's folder: 4 cells per class of genetic5 recorded through a 25 °C, 20 kHz rig, labelled."""
    from rtclassify.dsp.windows import WindowSpec
    from trainer.data import load_spike_set
    from trainer.labels import get_task
    from trainer.rigs import Condition, Rig, family_ratios, write_condition_folder

    data = load_spike_set(spikes_dir_module, WindowSpec())
    task = get_task("genetic5")
    y = data.labels(task)
    idx = np.concatenate([np.flatnonzero(y == k)[:4] for k in range(len(task.classes))])
    folder = tmp_path_factory.mktemp("lab")
    ratios = family_ratios(list(task.classes), y, data.dendrite_types)
    write_condition_folder(folder, Condition("25 °C", Rig(fs_hz=20_000.0, filter_hz=5_000.0, temperature_c=25.0,
                                                           stored=True)),
                           [data.traces[i] for i in idx], data.fs_hz[idx], data.specimen_ids[idx], ratios[idx],
                           seed=0, labels=[task.classes[y[i]] for i in idx])
    return folder


@pytest.fixture(scope="module")
def spikes_dir_module():
    from conftest import SPIKES, need

    return need(SPIKES)


def test_adapt_writes_a_model_that_predict_and_the_daemon_use(lab, tmp_path):
    from rtclassify.daemon.engine import Engine, ServeConfig
    from rtclassify.model.file_format import load_model, resolve_model_path
    from rtclassify.offline.predict import predict_folder
    from helpers import spike_sweep

    out = tmp_path / "lab.pt"
    result = CliRunner().invoke(trainer_main, ["adapt", "--base", "genetic5", "--data", str(lab), "--out", str(out),
                                               "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "cross-validated on the lab's cells" in result.output
    model = load_model(str(out))
    a = model.card["adaptation"]
    assert a["base"]["file_sha256"] == hashlib.sha256(resolve_model_path("genetic5").read_bytes()).hexdigest()
    assert a["cells"]["n_cells"] == 20 and a["cells"]["per_class"] == {c: 4 for c in model.classes}
    assert a["cells"]["temperature_c"] == ["25.0"] and a["cells"]["fs_hz"] == [20_000.0]
    cv = a["cross_validation"]
    assert cv["folds"] == 4 and 0 <= cv["adapted"]["balanced_accuracy"] <= 1 and "base" in cv
    assert model.card["calibration"]["method"] == "temperature" and model.card["name"] == "genetic5-adapted"
    assert model.sha256 != load_model("genetic5").sha256
    counts = predict_folder(model, lab, tmp_path / "p.csv")
    assert counts["classified"] == 20
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert all(r["label"] in model.classes for r in rows)
    labels = []
    eng = Engine(model, ServeConfig(shed_factor=1e9), lambda t, m: labels.append(m) if t == "label" else None)
    v, i = spike_sweep()
    eng.on_data(0, 0, 0, 50_000.0, np.column_stack([v, i]))
    eng.classify_ready()
    assert len(labels) == 1 and labels[0]["model"]["name"] == "genetic5-adapted"


def test_adapt_refuses_a_folder_without_labels_or_with_unknown_ones(lab, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(lab, bad)
    rows = list(csv.DictReader(open(lab / "cells.csv")))
    with open(bad / "cells.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "label"])
        w.writeheader()
        w.writerows([{k: v for k, v in r.items() if k != "label"} for r in rows])
    result = CliRunner().invoke(trainer_main, ["adapt", "--base", "genetic5", "--data", str(bad), "--out",
                                               str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "needs a 'label' column" in result.output
    with open(bad / "cells.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{**r, "label": "Chandelier"} if k == 3 else r for k, r in enumerate(rows)])
    result = CliRunner().invoke(trainer_main, ["adapt", "--base", "genetic5", "--data", str(bad), "--out",
                                               str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "'Chandelier'" in result.output and rows[3]["specimen_id"] in result.output
    assert not (tmp_path / "x.pt").exists()
