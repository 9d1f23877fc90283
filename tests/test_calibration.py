"""Expected calibration error and temperature scaling on synthetic predictions of known calibration."""
import numpy as np
import pytest

from trainer.calibration import (apply_temperature, donor_split_calibration, expected_calibration_error,
                                 fit_temperature)


def calibrated_sample(n=20_000, k=5, sharpness=3.0, seed=0):
    """Probabilities and labels drawn from those very probabilities: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, sharpness, (n, k))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return p, y


def test_calibrated_probabilities_have_small_ece_and_temperature_one():
    p, y = calibrated_sample()
    assert expected_calibration_error(p, y) < 0.015
    assert fit_temperature(p, y) == pytest.approx(1.0, abs=0.05)


def test_a_softened_model_is_detected_and_its_temperature_recovered():
    p, y = calibrated_sample()
    soft = apply_temperature(p, 2.0)  # under-confident, like genetic5's out-of-fold outputs
    assert expected_calibration_error(soft, y) > 0.1
    t = fit_temperature(soft, y)
    assert t == pytest.approx(0.5, abs=0.03)
    assert expected_calibration_error(apply_temperature(soft, t), y) < 0.015
    assert np.array_equal(apply_temperature(soft, t).argmax(1), soft.argmax(1))  # decisions unchanged


def test_donor_split_fits_on_some_donors_and_scores_the_others():
    p, y = calibrated_sample(n=4000)
    donors = np.arange(4000) // 4  # four cells a donor
    rows = donor_split_calibration(apply_temperature(p, 2.0)[None], y, donors, splits=2)
    assert len(rows) == 2 and all(r["held_out_cells"] == 2000 for r in rows)
    assert all(r["ece_after"] < r["ece_before"] and 0.4 < r["temperature"] < 0.6 for r in rows)


def test_calibration_command_on_the_committed_report(spikes_dir, metadata_dir):
    from click.testing import CliRunner

    from trainer.__main__ import main

    # docs/report-dev is committed (the development stage's run): the command reads it by default
    result = CliRunner().invoke(main, ["calibration", "--data", str(spikes_dir), "--metadata", str(metadata_dir),
                                       "--method", "cnn_broad2", "--splits", "1"])
    assert result.exit_code == 0, result.output
    assert "cnn_broad2:" in result.output and "held-out ECE after median" in result.output


def test_apply_refuses_a_calibrated_file_and_replace_sets_the_fitted_temperature(spikes_dir, metadata_dir, tmp_path):
    import shutil

    from click.testing import CliRunner

    from rtclassify.model.file_format import BUILTIN_DIR, apply_temperature_to_file, load_model
    from trainer.__main__ import main

    # two copies with different stale temperatures: --replace must leave both at the one fitted on the report
    fitted = []
    for stale in (1.3, 0.9):
        model = tmp_path / f"broad2-{stale}.pt"
        shutil.copy(BUILTIN_DIR / "broad2.pt", model)
        apply_temperature_to_file(str(model), stale, {"fitted_on": "test: a stale temperature"})
        before = load_model(str(model), runtime="torchscript")
        args = ["calibration", "--data", str(spikes_dir), "--metadata", str(metadata_dir), "--method", "cnn_broad2",
                "--splits", "1", "--apply", str(model)]
        refused = CliRunner().invoke(main, args)
        assert refused.exit_code != 0 and "--replace" in refused.output
        result = CliRunner().invoke(main, args + ["--replace"])
        assert result.exit_code == 0, result.output
        cal = load_model(str(model)).card["calibration"]
        old_t = before.card["calibration"]["temperature"]
        assert cal["replaces_temperature"] == old_t
        fitted.append(cal["temperature"])
    assert fitted[0] == pytest.approx(fitted[1], abs=1e-4) and fitted[0] != pytest.approx(old_t, abs=1e-3)
    windows = np.random.default_rng(1).normal(-55, 15, (8, before.spec.n_samples)).astype(np.float32)
    # same network: undo both temperatures and the outputs agree
    logit_old = np.log(before.run(windows)) * old_t
    logit_new = np.log(load_model(str(model)).run(windows)) * cal["temperature"]
    diff = logit_old - logit_new
    assert np.allclose(diff, diff[:, :1], atol=1e-3)  # equal up to a per-window constant (softmax)


def test_bias_sweep_chooses_the_shift_on_the_other_folds_of_the_committed_report(spikes_dir, metadata_dir):
    from click.testing import CliRunner

    from trainer.__main__ import main

    result = CliRunner().invoke(main, ["bias-sweep", "--data", str(spikes_dir), "--metadata", str(metadata_dir),
                                       "--shifts", "0,0.5"])
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0].strip(): line for line in result.output.splitlines()}
    assert "no further shift" in lines and "chosen on the other folds" in lines
    assert "shifts chosen per fold" in result.output  # one repeat: the nested choice over its folds


def test_bias_sweep_apply_shifts_a_sibling_refits_its_temperature_and_hands_it_on(spikes_dir, metadata_dir,
                                                                                 tmp_path):
    """`bias-sweep --apply`: the sibling's logits move by strength x -log(its training class frequency),
    its temperature is fitted again on the calibration split through rigs (fitting once more changes it
    by a hair), and the all-cells file, shifted alike, takes that temperature."""
    import shutil

    from click.testing import CliRunner

    from rtclassify.model.file_format import BUILTIN_DIR, load_model, output_shift
    from trainer.__main__ import main
    from trainer.calibration import calibrate_file_on_rigs
    from trainer.cli.common import fold_groups, load
    from trainer.evaluate import shipping_split
    from trainer.labels import get_task
    from trainer.recipe import make_config

    sibling, shipped = tmp_path / "sibling.pt", tmp_path / "shipped.pt"
    for path in (sibling, shipped):
        shutil.copy(BUILTIN_DIR / "genetic5.pt", path)
    before = load_model(str(sibling), runtime="torchscript")
    result = CliRunner().invoke(main, ["bias-sweep", "--data", str(spikes_dir), "--metadata", str(metadata_dir),
                                       "--apply", str(sibling), "--card-to", str(shipped), "--strength", "0.25"])
    assert result.exit_code == 0, result.output
    after = load_model(str(sibling), runtime="torchscript")
    counts = np.array([before.card["training_data"]["per_class"][c] for c in before.classes], float)
    np.testing.assert_allclose(np.array(output_shift(after.card)) - output_shift(before.card),
                               -0.25 * np.log(counts / counts.sum()), atol=1e-5)
    t = after.card["calibration"]["temperature"]
    assert t != pytest.approx(before.card["calibration"]["temperature"], abs=1e-4)
    assert load_model(str(shipped)).card["calibration"]["temperature"] == pytest.approx(t, rel=1e-4)
    windows = np.random.default_rng(3).normal(-55, 15, (64, before.spec.n_samples)).astype(np.float32)
    exc = before.classes.index("Exc")
    assert (after.run(windows).argmax(1) == exc).sum() <= (before.run(windows).argmax(1) == exc).sum()
    data = load(spikes_dir, 50_000.0)
    _, calibration = shipping_split(data, fold_groups("donor", metadata_dir, data))
    again = calibrate_file_on_rigs(sibling, data, get_task("genetic5"), calibration, make_config(None, None, "genetic5"))
    assert again["calibration"]["temperature"] == pytest.approx(t, rel=0.01)  # already fitted: a factor of ~1
