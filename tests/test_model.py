import pytest
import torch

from rtclassify.model.network import ProbabilityEnsemble, TripleInputCNN


@pytest.mark.parametrize("branches", [("v",), ("v", "fft_re"), ("v", "fft_im"), ("v", "fft_re", "fft_im"),
                                      ("v", "dvdt", "fft_re", "fft_im")])
def test_every_ablation_scripts_saves_loads_and_matches(branches, tmp_path):
    torch.manual_seed(0)
    net = TripleInputCNN(150, 50_000, 5, branches=branches, channels=8).eval()
    x = torch.randn(4, 150) * 20 - 50
    eager = net(x)
    assert eager.shape == (4, 5)
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = torch.jit.load(str(path))
    assert torch.allclose(loaded(x), eager, atol=1e-5)


def test_branch_selection_changes_the_parameter_set():
    small = TripleInputCNN(150, 50_000, 5, branches=("v",), channels=8)
    full = TripleInputCNN(150, 50_000, 5, channels=8)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters())


def test_constructor_checks_shapes_and_names():
    with pytest.raises(ValueError, match="too small"):
        TripleInputCNN(6, 50_000, 5)
    with pytest.raises(ValueError, match="unknown branches"):
        TripleInputCNN(150, 50_000, 5, branches=("v", "wavelet"))
    with pytest.raises(ValueError, match="n_classes"):
        TripleInputCNN(150, 50_000, 1)
    with pytest.raises(ValueError, match="kernel=4: must be odd"):
        TripleInputCNN(150, 50_000, 5, kernel=4)


@pytest.mark.parametrize("kernel", [3, 7])
def test_kernel_size_sets_every_convolution_and_keeps_the_output_shape(kernel):
    net = TripleInputCNN(150, 50_000, 5, channels=4, kernel=kernel).eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    assert convs and {c.kernel_size[0] for c in convs} == {kernel}
    assert net(torch.randn(2, 150) * 20 - 50).shape == (2, 5)


def test_forward_refuses_a_wrong_length():
    net = torch.jit.script(TripleInputCNN(150, 50_000, 2, channels=4).eval())
    with pytest.raises(Exception, match="150"):
        net(torch.zeros(1, 149))


def test_ensemble_outputs_probabilities():
    torch.manual_seed(1)
    ens = torch.jit.script(ProbabilityEnsemble([TripleInputCNN(150, 50_000, 3, channels=4).eval() for _ in range(3)]))
    p = ens(torch.randn(5, 150) * 10 - 60)
    assert p.shape == (5, 3)
    assert torch.allclose(p.sum(dim=1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("branches", [("v",), ("v", "fft_re", "fft_im"), ("v", "dvdt", "fft_re", "fft_im")])
def test_fused_ensemble_equals_the_ensemble_of_its_members(branches, tmp_path):
    from rtclassify.model.network import FusedEnsemble

    torch.manual_seed(2)
    members = [TripleInputCNN(150, 50_000, 5, branches=branches, channels=8) for _ in range(3)]
    for m in members:  # give the batch-norm layers non-trivial statistics
        m.train()
        with torch.no_grad():
            m(torch.randn(32, 150) * 20 - 50)
        m.eval()
    x = torch.randn(6, 150) * 20 - 55
    expected = ProbabilityEnsemble(members).eval()(x)
    fused = torch.jit.script(FusedEnsemble(members).eval())
    torch.jit.save(fused, str(tmp_path / "f.pt"))
    assert torch.allclose(torch.jit.load(str(tmp_path / "f.pt"))(x), expected, atol=1e-6)


def test_fused_ensemble_refuses_members_of_different_shapes():
    from rtclassify.model.network import FusedEnsemble

    members = [TripleInputCNN(150, 50_000, 5, channels=8), TripleInputCNN(150, 50_000, 5, channels=4)]
    with pytest.raises(ValueError, match="different shapes.*distil"):
        FusedEnsemble(members)
