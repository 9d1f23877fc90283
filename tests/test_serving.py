"""The ONNX serving path computes what the folded network computes, and a model file's serving
graph is checked against its TorchScript module when written and when loaded."""
import numpy as np
import pytest
import torch

from rtclassify.fold import FoldedCNN
from rtclassify.model import TripleInputCNN
from rtclassify.modelfile import ModelFileError, load_model, save_model
from rtclassify.serving import (SERVING_FILE, OnnxRunner, ServingCNN, check_against_reference, export_onnx,
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
        assert np.abs(ServingCNN(folded).eval()(v).numpy() - expected).max() < 2e-6
    runner = OnnxRunner(export_onnx(folded))
    assert np.abs(runner(v.numpy()) - expected).max() < 1e-5
    assert np.abs(runner(v[:1].numpy()) - expected[:1]).max() < 1e-5
    assert check_against_reference(runner, folded, 150, 50_000.0) < 1e-5


def test_a_bias_map_becomes_edge_weights_exactly():
    rng = np.random.default_rng(0)
    shift, w, bias = rng.normal(size=4), rng.normal(size=(3, 4, 5)), rng.normal(size=3)
    bias_map = torch.nn.functional.conv1d(torch.tensor(shift)[None, :, None].expand(1, -1, 20), torch.tensor(w),
                                          torch.tensor(bias), padding=2)[0][:, None, :]
    b, edge = split_bias_map(bias_map.float(), 5, 2)
    pos = np.arange(20)[:, None] + np.arange(5)[None, :] - 2
    rebuilt = b.numpy()[:, None] + edge.numpy() @ ((pos >= 0) & (pos < 20)).T
    assert np.abs(rebuilt - bias_map[:, 0].numpy()).max() < 1e-5
    with pytest.raises(ValueError, match="not a padded constant"):
        split_bias_map(torch.randn(3, 1, 20), 5, 2)


def folded_file(path):
    torch.manual_seed(1)
    net = trained_like(TripleInputCNN(150, 50_000.0, 2, channels=4, depth=2), 1)
    return save_model(FoldedCNN(net), tiny_card(), path)


def test_a_saved_folded_model_runs_on_onnx_and_matches_torchscript(tmp_path):
    folded_file(tmp_path / "m.pt")
    onnx_model = load_model(str(tmp_path / "m.pt"))
    ts_model = load_model(str(tmp_path / "m.pt"), runtime="torchscript")
    assert (onnx_model.runtime, ts_model.runtime) == ("onnx", "torchscript")
    x = verification_windows(150, 50_000.0)
    assert np.abs(onnx_model.run(x) - ts_model.run(x)).max() < 1e-5


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


def test_runtime_onnx_is_refused_for_a_file_without_a_serving_graph(tmp_path):
    from test_modelfile import save_tiny

    save_tiny(tmp_path / "ens.pt")  # an ensemble file: TorchScript only
    assert load_model(str(tmp_path / "ens.pt")).runtime == "torchscript"
    with pytest.raises(ModelFileError, match="serving graph"):
        load_model(str(tmp_path / "ens.pt"), runtime="onnx")


@pytest.mark.parametrize("name", ["genetic5", "broad2"])
def test_shipped_models_carry_a_verified_serving_graph(name):
    m = load_model(name)
    assert m.runtime == "onnx"
    x = verification_windows(m.spec.n_samples, m.spec.fs_hz)
    with torch.inference_mode():
        assert np.abs(m.run(x) - m.module(torch.from_numpy(x)).numpy()).max() < 1e-5
