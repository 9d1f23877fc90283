import json
import zipfile

import numpy as np
import pytest
import torch

from rtclassify.model.inputs import describe_normalisation
from rtclassify.model.network import ProbabilityEnsemble, TripleInputCNN
from rtclassify.model.file_format import BUILTIN_MODELS, ModelFileError, hash_weights, load_model, save_model
from rtclassify.dsp.windows import WindowSpec


def tiny_card(classes=("A", "B")):
    return {"name": "tiny", "task": "test", "classes": list(classes), "window": WindowSpec().to_dict(),
            "normalisation": describe_normalisation()}


def save_tiny(path, classes=("A", "B")):
    torch.manual_seed(0)
    ens = ProbabilityEnsemble([TripleInputCNN(150, 50_000, len(classes), channels=4)])
    return ens.eval(), save_model(ens, tiny_card(classes), path)


def test_roundtrip_preserves_outputs_and_card(tmp_path):
    ens, card = save_tiny(tmp_path / "m.pt")
    loaded = load_model(str(tmp_path / "m.pt"))
    assert loaded.classes == ["A", "B"] and loaded.spec == WindowSpec()
    assert loaded.sha256 == card["weights_sha256"] == hash_weights(ens)
    x = torch.randn(3, 150) * 10 - 55
    assert torch.allclose(loaded.module(x), ens(x), atol=1e-5)


def rewrite_member(path, out, member_suffix, transform):
    """Copy a TorchScript zip, passing one member through `transform`."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith(member_suffix):
                data = transform(data)
            zout.writestr(item, data)


def test_tampered_card_checksum_is_refused(tmp_path):
    save_tiny(tmp_path / "m.pt")

    def bad_checksum(data):
        card = json.loads(data)
        card["weights_sha256"] = "0" * 64
        return json.dumps(card).encode()

    rewrite_member(tmp_path / "m.pt", tmp_path / "bad.pt", "extra/card.json", bad_checksum)
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(str(tmp_path / "bad.pt"))


def test_card_class_count_must_match_the_output(tmp_path):
    save_tiny(tmp_path / "m.pt")

    def three_classes(data):
        card = json.loads(data)
        card["classes"] = ["A", "B", "C"]
        return json.dumps(card).encode()

    rewrite_member(tmp_path / "m.pt", tmp_path / "bad.pt", "extra/card.json", three_classes)
    with pytest.raises(ModelFileError, match="3 classes"):
        load_model(str(tmp_path / "bad.pt"))


def test_plain_torchscript_without_card_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(TripleInputCNN(150, 50_000, 2, channels=4).eval()), str(tmp_path / "raw.pt"))
    with pytest.raises(ModelFileError, match="card"):
        load_model(str(tmp_path / "raw.pt"))


def test_garbage_file_and_unknown_name_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model(str(tmp_path / "junk.pt"))
    with pytest.raises(ModelFileError, match="neither a built-in model"):
        load_model("genetic7")


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_builtin_models_load_with_complete_cards(name):
    m = load_model(name)
    card = m.card
    assert card["task"] == name
    assert card["classes"] == (["Exc", "Ndnf", "Pvalb", "Sst", "Vip"] if name == "genetic5" else ["Exc", "Inh"])
    for key in ("window", "normalisation", "training_data", "evaluation", "weights_sha256", "architecture"):
        assert card[key], key
    assert card["evaluation"]["pooled"]["balanced_accuracy"] > 0.5
    assert len(card["weights_sha256"]) == 64


def test_card_update_keeps_the_weights_and_refuses_checksum_fields(tmp_path):
    import shutil

    from rtclassify.model.file_format import BUILTIN_DIR, ModelFileError, load_model, update_card

    path = tmp_path / "m.pt"
    shutil.copy(BUILTIN_DIR / "broad2.pt", path)
    before = load_model(str(path))
    card = update_card(str(path), {"evaluation": {"note": "from a report"}})
    after = load_model(str(path))
    assert after.card["evaluation"] == {"note": "from a report"} == card["evaluation"]
    assert after.sha256 == before.sha256 and after.classes == before.classes
    with pytest.raises(ModelFileError, match="weights_sha256"):
        update_card(str(path), {"weights_sha256": "0" * 64})


def test_a_temperature_is_built_into_the_module_and_the_card(tmp_path):
    from rtclassify.model.file_format import apply_temperature_to_file
    from trainer.calibration import apply_temperature
    from rtclassify.model.runtimes import VERIFY_TOLERANCE

    before = load_model("broad2", runtime="torchscript")  # a copy is rewritten
    windows = np.random.default_rng(0).normal(-55, 15, (8, before.spec.n_samples)).astype(np.float32)
    out = tmp_path / "calibrated.pt"
    card = apply_temperature_to_file("broad2", 0.8, {"fitted_on": "test"}, out=out)
    total = before.card.get("calibration", {}).get("temperature", 1.0) * 0.8  # temperatures compose
    assert card["calibration"] == {"method": "temperature", "temperature": pytest.approx(total, abs=1e-5), "fitted_on": "test"}
    for runtime in ("onnx", "torchscript"):
        after = load_model(str(out), runtime=runtime)
        assert after.sha256 == card["weights_sha256"] != before.sha256
        assert np.allclose(after.run(windows), apply_temperature(before.run(windows), 0.8), atol=VERIFY_TOLERANCE)


def test_an_output_shift_is_built_into_the_module_before_its_temperature(tmp_path):
    """The file gives softmax((z + shift) / T): a shift of the logits z before the temperature, built into
    the last layer; the card records the total; the trainer's as_file_gives turns raw probabilities into
    the same; and a shift of the wrong length is refused by name."""
    from rtclassify.model.file_format import ModelFileError, output_shift, shift_output_bias_in_file
    from rtclassify.model.runtimes import VERIFY_TOLERANCE
    from trainer.calibration import apply_temperature, as_file_gives

    before = load_model("genetic5", runtime="torchscript")
    t = before.card["calibration"]["temperature"]
    windows = np.random.default_rng(2).normal(-55, 15, (8, before.spec.n_samples)).astype(np.float32)
    raw = apply_temperature(before.run(windows), 1.0 / t)  # softmax(z + shift already in the file)
    out = tmp_path / "shifted.pt"
    shift = np.array([0.0, 1.0, -0.5, 0.25, 2.0])
    card = shift_output_bias_in_file("genetic5", shift, {"strength": "test"}, out=out)
    total = np.asarray(output_shift(before.card)) + shift  # shifts add up
    np.testing.assert_allclose(card["output_shift"]["logits"], total, atol=1e-6)
    assert card["output_shift"]["strength"] == "test" and card["weights_sha256"] != before.sha256
    expected = apply_temperature(raw * np.exp(shift) / (raw * np.exp(shift)).sum(1, keepdims=True), t)
    for runtime in ("onnx", "torchscript"):
        got = load_model(str(out), runtime=runtime).run(windows)
        assert np.allclose(got, expected, atol=VERIFY_TOLERANCE)
        assert not np.allclose(got, before.run(windows), atol=0.01)  # it did move the answers
    unshifted = raw * np.exp(-np.asarray(output_shift(before.card)))  # the network before any file shift
    unshifted /= unshifted.sum(1, keepdims=True)
    assert np.allclose(as_file_gives(unshifted, card), expected, atol=1e-5)
    with pytest.raises(ModelFileError, match="2 values for 5 classes"):
        shift_output_bias_in_file("genetic5", [0.0, 1.0], {}, out=tmp_path / "bad.pt")


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_the_shipped_models_carry_their_calibration(name):
    card = load_model(name).card
    cal = card["calibration"]
    assert cal["method"] == "temperature" and 0.3 < cal["temperature"] < 1.0
    assert "calibration cells" in cal["fitted_on"] and cal["ece_after_on_fit_cells"] < cal["ece_before_on_fit_cells"]
    held_out = card["envelope"]["figures"]["conditions"]  # the final split through every rig of the report
    # with the temperature declared the probabilities are closer to calibrated than where it is not (each AP
    # then also read as at 25 °C, model.trust: less sure than right, by design), and confidently wrong at
    # most as often as the confident-wrong target allows (3%)
    told = {k: c for k, c in held_out.items() if "°C told" in k}
    untold = held_out["25 °C not told, 50 kHz, 10 kHz"]
    assert len(told) == 2 and all(c["ece"] < untold["ece"] and c["confident_wrong"] <= 0.03 for c in told.values())
    assert all(c["confident_wrong"] is not None for c in held_out.values() if "ece" in c)
    assert card["envelope"]["figures"]["pooled_confident_wrong"]["answers"] > 0


@pytest.mark.parametrize("name", ["genetic5", "broad2"])
def test_the_shipped_models_state_their_envelope(name):
    env = load_model(name).card["envelope"]
    assert env["fs_hz"] == [10_000.0, 200_000.0] and env["temperature_c"] == [22.0, 34.0]
    lo, hi = env["window_start_mv"]
    assert -90 < lo < -60 and -40 < hi < -10
    figures = env["figures"]["conditions"]
    assert figures["8 kHz, 2 kHz"]["refused_share"] == 1.0 and "balanced_accuracy" in figures["as recorded"]


def test_the_all_cells_file_takes_its_held_out_siblings_temperature(tmp_path):
    """`ship`: the file trained on every cell has no held-out cells; it carries the temperature its
    sibling was fitted to, and its card names the sibling. Here the sibling is the shipped broad2 and the
    'all-cells' file is the same network with its temperature undone: taking it back must restore the
    shipped probabilities exactly."""
    from rtclassify.model.file_format import ModelFileError, apply_temperature_to_file, update_card
    from trainer.cli.cmd_ship import take_temperature

    sibling = load_model("broad2", runtime="torchscript")
    t = sibling.card["calibration"]["temperature"]
    raw = tmp_path / "all-cells.pt"
    apply_temperature_to_file("broad2", 1.0 / t, {"fitted_on": "test: temperature undone"}, out=raw)
    card = take_temperature(raw, sibling.path)
    assert card["calibration"]["temperature"] == pytest.approx(t, rel=1e-4)
    assert sibling.card["weights_sha256"][:12] in card["calibration"]["fitted_on"]
    assert card["calibration"]["ece_before_on_fit_cells"] == sibling.card["calibration"]["ece_before_on_fit_cells"]
    windows = np.random.default_rng(1).normal(-55, 15, (8, sibling.spec.n_samples)).astype(np.float32)
    assert np.allclose(load_model(str(raw), runtime="torchscript").run(windows), sibling.run(windows), atol=1e-5)
    uncalibrated = tmp_path / "uncalibrated.pt"
    uncalibrated.write_bytes(raw.read_bytes())
    update_card(str(uncalibrated), {"calibration": None})
    with pytest.raises(ModelFileError, match="ship --train-on development"):
        take_temperature(raw, uncalibrated)
