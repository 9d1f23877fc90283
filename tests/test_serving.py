"""The CPU serving paths (ONNX Runtime on the serving graph, the compiled kernels) compute what the
folded network computes, and both are checked against the TorchScript module when loaded (the
serving graph also when written)."""
import numpy as np
import pytest
import torch

from rtclassify.model.compiled import PackedNetwork
from rtclassify.model.folding import FoldedCNN
from rtclassify.model.network import TripleInputCNN
from rtclassify.model.file_format import ModelFileError, load_model, save_model
from rtclassify.model.runtimes import (SERVING_FILE, VERIFY_TOLERANCE, OnnxRunner, ServingCNN, check_against_reference, export_onnx,
                                split_bias_map, verification_windows)
from test_fold import ARCHITECTURES, trained_like
from test_modelfile import rewrite_member, tiny_card

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("branches,depth,negative", ARCHITECTURES)
def test_serving_graph_matches_the_folded_network(branches, depth, negative):
    """Eager ServingCNN and its ONNX graph in ONNX Runtime, against the scripted folded network,
    on random inputs and on the fixed verification windows, batch 1 and 7."""
    torch.manual_seed(depth)
    net = trained_like(TripleInputCNN(150, 50_000.0, 5, branches=branches, channels=8, depth=depth), depth, negative)
    folded = torch.jit.script(FoldedCNN(net).eval())
    v = (-65 + 100 * torch.rand(7, 150)).float()
    with torch.inference_mode():
        expected = folded(v).numpy()
        assert np.abs(ServingCNN(folded).eval()(v).numpy() - expected).max() < VERIFY_TOLERANCE / 10
    runner = OnnxRunner(export_onnx(folded))
    assert np.abs(runner(v.numpy()) - expected).max() < VERIFY_TOLERANCE / 10
    assert np.abs(runner(v[:1].numpy()) - expected[:1]).max() < VERIFY_TOLERANCE / 10
    assert check_against_reference(runner, folded, 150, 50_000.0) < VERIFY_TOLERANCE / 10
    kernels = PackedNetwork(ServingCNN(folded))
    assert np.abs(kernels(v.numpy()) - expected).max() < VERIFY_TOLERANCE / 10
    assert np.abs(kernels(v[:1].numpy()) - expected[:1]).max() < VERIFY_TOLERANCE / 10
    assert check_against_reference(kernels, folded, 150, 50_000.0) < VERIFY_TOLERANCE / 10


def test_a_bias_map_becomes_edge_weights_exactly():
    rng = np.random.default_rng(0)
    shift, w, bias = rng.normal(size=4), rng.normal(size=(3, 4, 5)), rng.normal(size=3)
    bias_map = torch.nn.functional.conv1d(torch.tensor(shift)[None, :, None].expand(1, -1, 20), torch.tensor(w),
                                          torch.tensor(bias), padding=2)[0][:, None, :]
    b, edge = split_bias_map(bias_map.float(), 5, 2)
    pos = np.arange(20)[:, None] + np.arange(5)[None, :] - 2
    rebuilt = b.numpy()[:, None] + edge.numpy() @ ((pos >= 0) & (pos < 20)).T
    assert np.abs(rebuilt - bias_map[:, 0].numpy()).max() < VERIFY_TOLERANCE / 10
    with pytest.raises(ValueError, match="not a padded constant"):
        split_bias_map(torch.randn(3, 1, 20), 5, 2)


def folded_file(path):
    torch.manual_seed(1)
    net = trained_like(TripleInputCNN(150, 50_000.0, 2, channels=4, depth=2), 1)
    return save_model(FoldedCNN(net), tiny_card(), path)


def test_a_saved_folded_model_runs_on_every_cpu_runtime_alike(tmp_path):
    folded_file(tmp_path / "m.pt")
    models = {r: load_model(str(tmp_path / "m.pt"), runtime=r) for r in ("auto", "kernels", "onnx", "torchscript")}
    assert {r: m.runtime for r, m in models.items()} == {"auto": "kernels", "kernels": "kernels", "onnx": "onnx",
                                                         "torchscript": "torchscript"}
    x = verification_windows(150, 50_000.0)
    reference = models["torchscript"].run(x)
    for runtime in ("kernels", "onnx"):
        assert np.abs(models[runtime].run(x) - reference).max() < VERIFY_TOLERANCE / 10
        assert np.abs(models[runtime].run(x[3:4]) - reference[3:4]).max() < VERIFY_TOLERANCE / 10


def test_a_serving_graph_that_disagrees_is_refused_at_load(tmp_path):
    folded_file(tmp_path / "a.pt")
    other = tmp_path / "b.pt"
    torch.manual_seed(2)
    save_model(FoldedCNN(trained_like(TripleInputCNN(150, 50_000.0, 2, channels=4, depth=2), 2)), tiny_card(), other)
    import zipfile
    with zipfile.ZipFile(other) as z:
        foreign = z.read(next(n for n in z.namelist() if n.endswith(SERVING_FILE)))
    rewrite_member(tmp_path / "a.pt", tmp_path / "swapped.pt", SERVING_FILE, lambda data: foreign)
    with pytest.raises(ModelFileError, match="serving graph's probabilities differ"):
        load_model(str(tmp_path / "swapped.pt"))
    assert load_model(str(tmp_path / "swapped.pt"), runtime="torchscript").runtime == "torchscript"


def test_an_ensemble_file_runs_on_torchscript_and_says_why(tmp_path):
    from test_modelfile import save_tiny

    save_tiny(tmp_path / "ens.pt")  # an ensemble file: not folded, no serving graph
    auto = load_model(str(tmp_path / "ens.pt"))
    assert auto.runtime == "torchscript"
    assert "not a folded network" in auto.runtime_note and "no serving graph" in auto.runtime_note
    with pytest.raises(ModelFileError, match="serving graph"):
        load_model(str(tmp_path / "ens.pt"), runtime="onnx")
    with pytest.raises(ModelFileError, match="runtime kernels: not a folded network"):
        load_model(str(tmp_path / "ens.pt"), runtime="kernels")


@pytest.mark.parametrize("name", ["genetic5", "broad2"])
def test_shipped_models_run_on_the_kernels_and_carry_a_verified_serving_graph(name):
    x = verification_windows(150, 50_000.0)
    for runtime in ("auto", "onnx"):
        m = load_model(name, runtime=runtime)
        assert m.runtime == {"auto": "kernels", "onnx": "onnx"}[runtime]
        with torch.inference_mode():
            assert np.abs(m.run(x) - m.module(torch.from_numpy(x)).numpy()).max() < VERIFY_TOLERANCE / 10
