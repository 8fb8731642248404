"""f_g and f_c (Sec. 3.2, 3.3, 4.2) against a plain-numpy forward pass written here."""

import numpy as np
import pytest
import torch
from torch import nn

from cupl.models import ClipClassifier, Dropout, MultiHeadClassifier, dropout, dropout_mask


def numpy_heads(model: MultiHeadClassifier, x: np.ndarray) -> np.ndarray:
    """Eval-mode f_g, head by head: FC -> ReLU -> FC -> FC (dropout is the identity in eval)."""
    h1, _ = model.hidden
    w1, b1 = model.fc1.weight.detach().double().numpy(), model.fc1.bias.detach().double().numpy()
    out = []
    for k in range(model.num_heads):
        rows = slice(k * h1, (k + 1) * h1)
        h = np.maximum(x @ w1[rows].T + b1[rows], 0.0)
        z = h @ model.w2[k].detach().double().numpy().T + model.b2[k].detach().double().numpy()
        out.append(z @ model.w3[k].detach().double().numpy() + float(model.b3[k].detach()))
    return np.stack(out, axis=-1)


def numpy_clip(model: ClipClassifier, x: np.ndarray) -> np.ndarray:
    """Eval-mode f_c: returns the raw last-layer outputs [..., 1 or 2]."""
    fc1, fc2, fc3 = (model.regressor[i] for i in (0, 3, 5))

    def lin(layer, v):
        return v @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()

    return lin(fc3, lin(fc2, np.maximum(lin(fc1, x), 0.0)))


@pytest.fixture
def generator_model():
    torch.manual_seed(0)
    model = MultiHeadClassifier(in_dim=12, num_heads=3, hidden=(8, 5), dropout=0.6).double().eval()
    with torch.no_grad():  # nonzero biases, so a bias mix-up between heads would show
        for p in (model.fc1.bias, model.b2, model.b3):
            p.normal_()
    return model


def test_generator_shapes(generator_model):
    x = torch.randn(4, 6, 12, dtype=torch.float64)
    assert generator_model(x).shape == (4, 6, 3)
    assert generator_model.anomaly_logit(x).shape == (4, 6)
    assert generator_model(x[0, 0]).shape == (3,)
    assert MultiHeadClassifier().fc1.weight.shape == (2 * 512, 2048)  # paper defaults: K = 2, 2048-d I3D


def test_generator_matches_numpy_reference(generator_model):
    x = np.random.default_rng(1).normal(size=(7, 12))
    out = generator_model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, numpy_heads(generator_model, x), rtol=1e-10, atol=1e-12)


def test_anomaly_logit_is_mean_of_heads(generator_model):
    x = np.random.default_rng(2).normal(size=(5, 12))
    a_avg = generator_model.anomaly_logit(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(a_avg, numpy_heads(generator_model, x).mean(-1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_heads_are_independent(generator_model, k):
    x = torch.randn(9, 12, dtype=torch.float64)
    before = generator_model(x).detach()
    h1, _ = generator_model.hidden
    with torch.no_grad():
        generator_model.fc1.weight[k * h1:(k + 1) * h1] += 0.5
        generator_model.fc1.bias[k * h1:(k + 1) * h1] -= 0.1
        generator_model.w2[k] *= -1.0
        generator_model.b2[k] += 1.0
        generator_model.w3[k] += 0.3
        generator_model.b3[k] += 2.0
    after = generator_model(x).detach()
    others = [j for j in range(3) if j != k]
    assert torch.equal(after[:, others], before[:, others])
    assert (after[:, k] - before[:, k]).abs().min() > 0


def test_dropout_only_in_train_mode(generator_model):
    x = torch.randn(50, 12, dtype=torch.float64)
    assert torch.equal(generator_model(x), generator_model(x))
    generator_model.train()
    torch.manual_seed(3)
    a = generator_model(x)
    b = generator_model(x)
    assert not torch.equal(a, b)


def test_clip_classifier_shapes_and_layout():
    model = ClipClassifier(in_dim=10, hidden=(6, 4), dropout=0.8)
    assert model(torch.randn(3, 5, 10)).shape == (3, 5)
    assert model.anomaly_logit(torch.randn(7, 10)).shape == (7,)
    kinds = [type(layer) for layer in model.regressor]
    assert kinds == [nn.Linear, nn.ReLU, Dropout, nn.Linear, Dropout, nn.Linear]
    assert issubclass(Dropout, nn.Dropout)
    assert [model.regressor[i].weight.shape for i in (0, 3, 5)] == [(6, 10), (4, 6), (1, 4)]
    assert [model.regressor[i].p for i in (2, 4)] == [0.8, 0.8]
    released = ClipClassifier(two_way=True)  # the released checkpoint: 4096 -> 512 -> 32 -> 2
    assert [released.regressor[i].weight.shape for i in (0, 3, 5)] == [(512, 4096), (32, 512), (2, 32)]


def test_clip_classifier_matches_numpy_reference():
    torch.manual_seed(1)
    model = ClipClassifier(in_dim=10, hidden=(6, 4)).double().eval()
    x = np.random.default_rng(4).normal(size=(8, 10))
    out = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, numpy_clip(model, x)[:, 0], rtol=1e-10, atol=1e-12)


def test_two_way_logit_is_z1_minus_z0_and_sigmoid_is_softmax():
    torch.manual_seed(2)
    model = ClipClassifier(in_dim=10, hidden=(6, 4), two_way=True).double().eval()
    with torch.no_grad():
        model.regressor[5].bias.copy_(torch.tensor([0.3, -0.4], dtype=torch.float64))
    x = np.random.default_rng(5).normal(size=(8, 10))
    z = numpy_clip(model, x)
    logit = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(logit, z[:, 1] - z[:, 0], rtol=1e-10, atol=1e-12)
    softmax1 = np.exp(z[:, 1]) / np.exp(z).sum(-1)
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), softmax1, rtol=1e-10)
    np.testing.assert_allclose(model.anomaly_logit(torch.from_numpy(x)).detach().numpy(), logit)


def test_bad_input_dim_names_shapes():
    with pytest.raises(ValueError, match=r"\[\.\.\., 12\].*\(4, 11\)"):
        MultiHeadClassifier(in_dim=12, num_heads=2, hidden=(8, 5))(torch.randn(4, 11))
    with pytest.raises(ValueError, match=r"\[\.\.\., 10\].*\(3, 9\)"):
        ClipClassifier(in_dim=10, hidden=(6, 4))(torch.randn(3, 9))
    with pytest.raises(ValueError, match=r"\(3, 9\)"):
        ClipClassifier(in_dim=10, hidden=(6, 4)).hidden1(torch.randn(3, 9))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadClassifier(in_dim=4, num_heads=0)
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadClassifier(in_dim=4, dropout=1.0)
    with pytest.raises(ValueError, match="dropout"):
        ClipClassifier(in_dim=4, dropout=-0.1)


def test_dropout_mask_keeps_each_unit_with_probability_one_minus_p():
    """Keep share within 5 binomial standard deviations of 1 - p (n = 10^6: sd = 4.9e-4 at
    p = 0.6), values 0 or the inverse of the keep probability, and a mean of 1 (unbiased)."""
    for p in (0.6, 0.8, 0.1):
        mask = dropout_mask((1000, 1000), p, generator=torch.Generator().manual_seed(0))
        q = 1 - p
        kept = (mask > 0).double().mean().item()
        assert abs(kept - q) < 5 * (q * p / 1e6) ** 0.5
        values = mask.unique()
        assert len(values) == 2 and values[0] == 0
        assert abs(values[1].item() - 1 / q) < 1e-3  # q is rounded to a multiple of 1/65536
        assert abs(mask.double().mean().item() - 1) < 5 * (p / q / 1e6) ** 0.5


def test_dropout_mask_entries_are_independent():
    """Neighbouring entries (which share a 64-bit random word) keep independently: the share
    of kept pairs is q^2 within 5 standard deviations."""
    mask = dropout_mask((500_000, 2), 0.6, generator=torch.Generator().manual_seed(1)) > 0
    both = (mask[:, 0] & mask[:, 1]).double().mean().item()
    assert abs(both - 0.16) < 5 * (0.16 * 0.84 / 500_000) ** 0.5


def test_dropout_is_seeded_and_off_in_eval():
    x = torch.rand(4, 7, 3)
    a = dropout(x, 0.5, generator=torch.Generator().manual_seed(2))
    b = dropout(x, 0.5, generator=torch.Generator().manual_seed(2))
    c = dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    with pytest.raises(ValueError, match="p="):
        dropout_mask((3,), 1.0)


def test_dropout_gradient_is_the_mask():
    x = torch.rand(5, 6, requires_grad=True)
    y = dropout(x, 0.6, generator=torch.Generator().manual_seed(4))
    y.sum().backward()
    mask = dropout_mask((5, 6), 0.6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x.grad, mask)


def test_stacked_masks_are_each_models_masks_drawn_alone():
    """Model n's masks of every shape, drawn together, equal its masks drawn one call at a time
    from a generator seeded alike (odd sizes: the last 64-bit word is only partly used)."""
    from cupl.method.models import dropout_masks_stacked

    shapes, seeds = [(3, 7), (5, 2)], [11, 12, 13]
    stacked = dropout_masks_stacked(3, shapes, 0.8, [torch.Generator().manual_seed(s) for s in seeds])
    for n, seed in enumerate(seeds):
        alone = torch.Generator().manual_seed(seed)
        for shape, masks in zip(shapes, stacked):
            assert masks.shape == (3, *shape)
            assert torch.equal(masks[n], dropout_mask(shape, 0.8, generator=alone))
    with pytest.raises(ValueError, match="2 generators"):
        dropout_masks_stacked(3, shapes, 0.8, [torch.Generator(), torch.Generator()])
