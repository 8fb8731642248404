"""MC-Dropout (Eq. 8-10): the exact-fast path against naive passes and a numpy reference."""

import numpy as np
import pytest
import torch

from cupl.models import ClipClassifier, MultiHeadClassifier
from cupl.uncertainty import dropout_masks, mc_dropout


def make_generator(in_dim=12, heads=2, dropout=0.6, seed=0):
    torch.manual_seed(seed)
    model = MultiHeadClassifier(in_dim, heads, hidden=(16, 8), dropout=dropout).double()
    with torch.no_grad():  # nonzero biases, so that masking the second layer's bias is exercised
        for p in (model.fc1.bias, model.b2, model.b3):
            p.normal_(std=0.5)
    return model.eval()


def make_clip(in_dim=12, two_way=False, dropout=0.8, seed=0):
    torch.manual_seed(seed)
    model = ClipClassifier(in_dim, hidden=(16, 8), dropout=dropout, two_way=two_way).double()
    with torch.no_grad():
        for i in (0, 3, 5):
            model.regressor[i].bias.normal_(std=0.5)
    return model.eval()


def np_layers(model):
    """Per head: (W1 [h1, D], b1, W2 [h2, h1], b2, last layer as a function of z [h2] -> logit)."""
    t = lambda p: p.detach().double().numpy()  # noqa: E731
    if isinstance(model, MultiHeadClassifier):
        h1 = model.hidden[0]
        w1, b1 = t(model.fc1.weight), t(model.fc1.bias)
        return [(w1[k * h1:(k + 1) * h1], b1[k * h1:(k + 1) * h1], t(model.w2[k]), t(model.b2[k]),
                 lambda z, k=k: z @ t(model.w3[k]) + t(model.b3[k]))
                for k in range(model.num_heads)]
    fc1, fc2, fc3 = (model.regressor[i] for i in (0, 3, 5))

    def last(z):
        out = z @ t(fc3.weight).T + t(fc3.bias)
        return out[..., 1] - out[..., 0] if model.two_way else out[..., 0]

    return [(t(fc1.weight), t(fc1.bias), t(fc2.weight), t(fc2.bias), last)]


def np_mc_dropout(model, x, m1, m2):
    """Eq. 8-10 read literally: M passes, each with its masked parameters, layer by layer."""
    heads = np_layers(model)
    probs = []
    for m in range(m1.shape[0]):
        logits = []
        for k, (w1, b1, w2, b2, last) in enumerate(heads):
            h = np.maximum(x @ w1.T + b1, 0.0) * m1[m, k]  # dropout after the ReLU
            z = (h @ w2.T + b2) * m2[m, k]  # dropout after the second FC layer
            logits.append(last(z))
        probs.append(1 / (1 + np.exp(-np.mean(logits, axis=0))))  # Eq. 8 with A_avg (Eq. 4)
    probs = np.stack(probs, axis=1)  # [N, M]
    mean = probs.mean(1)  # Eq. 9
    var = (probs ** 2).mean(1) - mean ** 2  # Eq. 10, 1/M
    return mean, var


MODELS = {
    "f_g K=2": lambda: make_generator(heads=2),
    "f_g K=3": lambda: make_generator(heads=3),
    "f_c one-way": lambda: make_clip(two_way=False),
    "f_c two-way": lambda: make_clip(two_way=True),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_fast_equals_naive_with_same_masks(name):
    model = MODELS[name]()
    x = torch.randn(300, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast = mc_dropout(model, x, 20, torch.Generator().manual_seed(7), method="fast")
    naive = mc_dropout(model, x, 20, torch.Generator().manual_seed(7), method="naive")
    for a, b in zip(fast, naive):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert fast[1].max() > 1e-4  # the passes really differ


@pytest.mark.parametrize("name", list(MODELS))
def test_mean_and_var_match_numpy_reference_with_same_masks(name):
    model = MODELS[name]()
    x = np.random.default_rng(2).normal(size=(40, 12))
    k = getattr(model, "num_heads", 1)
    m1, m2 = dropout_masks(25, k, model.hidden, model.dropout, torch.Generator().manual_seed(3))
    mean, var = mc_dropout(model, torch.from_numpy(x), 25, torch.Generator().manual_seed(3))
    ref_mean, ref_var = np_mc_dropout(model, x, m1.double().numpy(), m2.double().numpy())
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), ref_var, rtol=0, atol=1e-6)
    assert ref_var.max() > 1e-4


def test_masks_are_inverted_dropout():
    m1, m2 = dropout_masks(200, 2, (64, 32), 0.6, torch.Generator().manual_seed(0))
    assert m1.shape == (200, 2, 64) and m2.shape == (200, 2, 32)
    for m in (m1, m2):
        values = torch.unique(m).tolist()
        assert values[0] == 0.0 and values[1] == pytest.approx(1 / 0.4) and len(values) == 2
        # drop rate 0.6 over 25 600 / 12 800 Bernoulli draws: std <= 0.0044, allow ~5 std
        assert abs(float((m == 0).float().mean()) - 0.6) < 0.02


@pytest.mark.parametrize("name", ["f_g", "f_c"])
def test_dropout_zero_gives_zero_variance_and_eval_mean(name):
    model = make_generator(dropout=0.0) if name == "f_g" else make_clip(dropout=0.0, two_way=True)
    x = torch.randn(64, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mean, var = mc_dropout(model, x, 50, torch.Generator().manual_seed(0))
    assert torch.equal(var, torch.zeros_like(var))
    with torch.no_grad():
        torch.testing.assert_close(mean, torch.sigmoid(model.anomaly_logit(x)), rtol=0, atol=1e-6)


def test_one_mask_set_serves_all_chunks():
    model = make_generator()
    x = torch.randn(100, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    whole = mc_dropout(model, x, 10, torch.Generator().manual_seed(1))
    chunked = mc_dropout(model, x, 10, torch.Generator().manual_seed(1), batch_size=7)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_train_mode_passes_agree_statistically_with_fast_path():
    # One clip, M = 4000 passes each way. Both sample the same per-clip distribution, so the
    # means differ by ~N(0, 2 var / M): with var <= 0.25 that is <= 0.011; the bound below is
    # over 4 standard deviations of the measured spread. Seeded, so the outcome is fixed.
    model = make_generator(dropout=0.6)
    x = torch.randn(1, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    passes = 4000
    mean_f, var_f = mc_dropout(model, x, passes, torch.Generator().manual_seed(1), method="fast")
    mean_t, var_t = mc_dropout(model, x, passes, torch.Generator().manual_seed(2), method="train")
    sd = float(torch.sqrt((var_f + var_t) / passes))
    assert var_f.item() > 1e-3
    assert abs(mean_f.item() - mean_t.item()) < 4 * sd + 1e-9
    assert var_t.item() == pytest.approx(var_f.item(), rel=0.15)


@pytest.mark.parametrize("method", ["fast", "naive", "train"])
@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_left_unchanged(method, training):
    for model in (make_generator(), make_clip()):
        model.train(training)
        mc_dropout(model, torch.randn(5, 12, dtype=torch.float64), 3, torch.Generator().manual_seed(0), method=method)
        assert all(m.training == training for m in model.modules())


def test_train_method_is_seeded():
    model = make_clip()
    x = torch.randn(20, 12, dtype=torch.float64)
    a = mc_dropout(model, x, 5, torch.Generator().manual_seed(9), method="train")
    b = mc_dropout(model, x, 5, torch.Generator().manual_seed(9), method="train")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_input():
    model = make_generator()
    with pytest.raises(ValueError, match=r"\[N, D\].*\(2, 3, 12\)"):
        mc_dropout(model, torch.zeros(2, 3, 12, dtype=torch.float64), 5)
    with pytest.raises(ValueError, match=r"\[N, D\].*\(12,\)"):
        mc_dropout(model, torch.zeros(12, dtype=torch.float64), 5)
    with pytest.raises(ValueError, match=r"12.*\(4, 11\)"):
        mc_dropout(model, torch.zeros(4, 11, dtype=torch.float64), 5)
    with pytest.raises(ValueError, match="passes"):
        mc_dropout(model, torch.zeros(4, 12, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="method"):
        mc_dropout(model, torch.zeros(4, 12, dtype=torch.float64), 5, method="exact")


def test_non_finite_features_are_rejected():
    model = make_generator()
    x = torch.zeros(4, 12, dtype=torch.float64)
    x[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"x.*non-finite.*\(4, 12\)"):
        mc_dropout(model, x, 5)
    x[2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"x.*non-finite"):
        mc_dropout(model, x, 5, method="train")


# ---------------------------------------------------------------- masks per clip


def per_clip(model, x, passes, seed):
    """`mc_per_clip` on the model's first layer, with a generator seeded `seed`."""
    from cupl.method.uncertainty import mc_per_clip

    with torch.no_grad():
        return mc_per_clip(model.hidden1(x), [t.detach() for t in model.head_weights()], passes, model.dropout,
                           torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(MODELS))
def test_per_clip_masks_match_numpy_reference_clip_by_clip(name):
    model = MODELS[name]()
    x = torch.randn(7, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    passes, k, (h1, h2) = 6, getattr(model, "num_heads", 1), model.hidden
    mean, var = per_clip(model, x, passes, seed=11)
    # the draws the docstring promises: pass by pass, m1 [N, K, h1] then m2 [N, K, h2]
    g, keep = torch.Generator().manual_seed(11), 1.0 - model.dropout
    draws = [((torch.rand((7, k, h1), generator=g) < keep).double() / keep,
              (torch.rand((7, k, h2), generator=g) < keep).double() / keep) for _ in range(passes)]
    for i in range(7):
        m1 = np.stack([d[0][i].numpy() for d in draws])  # [M, K, h1]: clip i's own masks
        m2 = np.stack([d[1][i].numpy() for d in draws])
        ref_mean, ref_var = np_mc_dropout(model, x[i:i + 1].numpy(), m1, m2)
        np.testing.assert_allclose(mean[i].item(), ref_mean[0], rtol=1e-10)
        np.testing.assert_allclose(var[i].item(), ref_var[0], rtol=1e-8, atol=1e-14)


def test_per_clip_masks_are_independent_across_clips_where_shared_ones_are_not():
    model = make_generator()
    x = torch.randn(1, 12, dtype=torch.float64).repeat(50, 1)  # one clip, fifty times
    mean, var = per_clip(model, x, passes=5, seed=0)
    shared_mean, _ = mc_dropout(model, x, 5, torch.Generator().manual_seed(0))
    assert torch.unique(shared_mean).numel() == 1  # every clip sees the same W~^m
    assert torch.unique(mean).numel() > 40  # each clip its own
    # and per clip the same estimator: the average over the copies is the M -> inf mean
    many, _ = mc_dropout(model, x[:1], 4000, torch.Generator().manual_seed(1))
    assert abs(mean.mean().item() - many.item()) < 4 * mean.std().item() / 50 ** 0.5


def test_per_clip_without_dropout_is_the_eval_model():
    model = make_generator(dropout=0.0)
    x = torch.randn(9, 12, dtype=torch.float64)
    mean, var = per_clip(model, x, passes=4, seed=0)
    with torch.no_grad():
        expected = torch.sigmoid(model.anomaly_logit(x))
    torch.testing.assert_close(mean, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(var == 0)
