"""The folded export form computes what the trained network computes."""
import pytest
import torch
from torch import nn

from rtclassify.model.folding import FoldedCNN
from rtclassify.model.network import PUBLISHED_BRANCHES, TripleInputCNN


def trained_like(net: TripleInputCNN, seed: int, negative_gamma: bool = False) -> TripleInputCNN:
    """Give every BatchNorm non-trivial statistics and affine parameters, as training would."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.3)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=gen) - 0.5)
            if negative_gamma:
                m.weight.data[::3] *= -1  # a decreasing map does not commute with a max-pool
    return net.eval()


# (branches, depth, negative BatchNorm scales): the architectures every export form is held to
ARCHITECTURES = [
    (("v", "dvdt", "fft_re", "fft_im"), 6, False),
    (("v", "dvdt", "fft_re", "fft_im"), 3, True),
    (PUBLISHED_BRANCHES, 4, False),
    (("v", "fft_re"), 2, True),
    (("v", "fft_im"), 5, False),
    (("dvdt",), 6, True),
]


@pytest.mark.parametrize("branches,depth,negative", ARCHITECTURES)
def test_folded_network_matches_the_trained_one(branches, depth, negative):
    torch.manual_seed(depth)
    net = trained_like(TripleInputCNN(150, 50_000.0, 5, branches=branches, channels=8, depth=depth), depth, negative)
    folded = torch.jit.script(FoldedCNN(net).eval())
    v = -65 + 100 * torch.rand(7, 150)  # mV
    with torch.inference_mode():
        expected = torch.softmax(net(v), dim=1)
        got = folded(v)
        assert torch.allclose(got, expected, atol=2e-6), (got - expected).abs().max()
        assert torch.allclose(folded(v[:1]), expected[:1], atol=2e-6)  # batch 1, the daemon's case


def test_folded_network_keeps_the_input_check():
    folded = torch.jit.script(FoldedCNN(TripleInputCNN(150, 50_000.0, 2, channels=4, depth=2).eval()))
    with pytest.raises(Exception, match=r"expected input of shape \(N, 150\)"):
        folded(torch.zeros(1, 149))
