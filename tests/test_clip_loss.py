"""Eq. 11 (`clip_loss`) with MIST's class weights and label smoothing, and f_c's training budget."""

import math

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from cupl.config import ClipConfig, make_config
from cupl.losses import clip_loss
from cupl.experiments.train import clip_batches, train_clip_classifier
from toy import toy_split


def np_weighted_bce(z, y, w_abnormal=1.0, w_normal=1.0, smoothing=0.0, eps=0.0):
    """MIST's Weighted_BCE_Loss written out in numpy: targets clamped to [e, 1 - e], weights per class term."""
    s = 1 / (1 + np.exp(-np.asarray(z, dtype=np.float64)))
    t = np.clip(np.asarray(y, dtype=np.float64), smoothing, 1 - smoothing)
    return float(np.mean(-w_abnormal * t * np.log(s + eps) - w_normal * (1 - t) * np.log(1 - s + eps)))


def test_weighted_loss_by_hand():
    # z = 0: sigmoid 0.5, so each term is its weight times log 2
    z = torch.zeros(2, dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = clip_loss(z, y, class_weights=(1.2, 0.8))
    assert float(loss) == pytest.approx((1.2 * math.log(2) + 0.8 * math.log(2)) / 2)


def test_label_smoothing_clamps_targets_by_hand():
    # e = 0.1: target 1 becomes 0.9, target 0 becomes 0.1, 0.5 stays. At z = log 3 (sigmoid 0.75):
    z = torch.full((3,), math.log(3), dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    loss = clip_loss(z, y, label_smoothing=0.1)
    p, q = math.log(0.75), math.log(0.25)
    expected = -((0.9 * p + 0.1 * q) + (0.1 * p + 0.9 * q) + (0.5 * p + 0.5 * q)) / 3
    assert float(loss) == pytest.approx(expected)


@pytest.mark.parametrize("weights,smoothing", [(None, 0.0), ((1.2, 0.8), 0.0), ((0.8, 0.65), 0.05), (None, 0.2)])
def test_clip_loss_equals_mist_formula(weights, smoothing):
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3, size=200)
    y = np.concatenate([rng.random(150), np.zeros(25), np.ones(25)])
    loss = clip_loss(torch.from_numpy(z), torch.from_numpy(y), class_weights=weights, label_smoothing=smoothing)
    w = weights or (1.0, 1.0)
    # MIST adds 1e-8 inside the logs; at |z| <= 3 * 4 sigma that moves the loss by far less than 1e-6
    assert float(loss) == pytest.approx(np_weighted_bce(z, y, *w, smoothing, eps=1e-8), abs=1e-6)
    assert float(loss) == pytest.approx(np_weighted_bce(z, y, *w, smoothing), rel=1e-12)


def test_defaults_are_plain_bce():
    z, y = torch.randn(50), torch.rand(50)
    assert torch.equal(clip_loss(z, y), torch.nn.functional.binary_cross_entropy_with_logits(z, y))


def test_weighted_loss_is_finite_at_saturated_logits():
    z = torch.tensor([100.0, -100.0], requires_grad=True)
    loss = clip_loss(z, torch.tensor([0.0, 1.0]), class_weights=(1.2, 0.8))
    loss.backward()
    assert loss.item() == pytest.approx((0.8 * 100 + 1.2 * 100) / 2)
    assert torch.isfinite(z.grad).all()


def test_clip_loss_rejects_bad_arguments():
    z, y = torch.zeros(3), torch.zeros(3)
    with pytest.raises(ValueError, match="label_smoothing"):
        clip_loss(z, y, label_smoothing=0.5)
    with pytest.raises(ValueError, match="class_weights"):
        clip_loss(z, y, class_weights=(1.0, 0.0))
    with pytest.raises(ValueError, match="differ"):
        clip_loss(z, torch.zeros(4))


@pytest.mark.parametrize("key,value", [("clip.loss", "focal"), ("clip.class_weights", (1.0, -1.0)),
                                       ("clip.label_smoothing", 0.5), ("clip.batches", "paired"),
                                       ("clip.budget", "time"), ("clip.steps", 0)])
def test_clip_switches_are_validated(key, value):
    with pytest.raises(ValueError, match=key):
        make_config("ucf", "smoke", **{key: value})


def test_class_weights_round_trip_as_a_tuple():
    from cupl.config import from_dict, to_dict
    import json

    config = make_config("ucf", "smoke", **{"clip.loss": "weighted", "clip.class_weights": (0.8, 0.65)})
    assert from_dict(json.loads(json.dumps(to_dict(config)))) == config


def test_step_budget_draws_the_same_number_of_full_batches():
    cfg = ClipConfig(budget="steps", steps=7, batch_size=32)
    gen = torch.Generator().manual_seed(0)
    for count in (10, 1000):  # the step count does not depend on the selected set
        batches = list(clip_batches(torch.zeros(count, dtype=torch.bool), cfg, gen))
        assert len(batches) == 7
        assert all(len(b) == 32 and 0 <= int(b.min()) and int(b.max()) < count for b in batches)


def test_epoch_budget_passes_over_every_sample_once_per_epoch():
    cfg = ClipConfig(budget="epochs", epochs=3, batch_size=32)
    batches = list(clip_batches(torch.zeros(100, dtype=torch.bool), cfg, torch.Generator().manual_seed(0)))
    assert len(batches) == 3 * 4  # ceil(100 / 32) per epoch
    for epoch in range(3):
        seen = torch.cat(batches[4 * epoch:4 * epoch + 4])
        assert sorted(seen.tolist()) == list(range(100))


def test_train_clip_classifier_takes_the_step_budget():
    train, _ = toy_split(4, 4, dim=8, seed=0)
    labels = torch.rand(train.num_clips)
    counts = []
    for fraction in (1.0, 0.5):
        selected = torch.rand(train.num_clips, generator=torch.Generator().manual_seed(1)) < fraction
        steps = []
        handle = register_optimizer_step_post_hook(lambda *a: steps.append(1))
        try:
            cfg = ClipConfig(hidden=(16, 4), budget="steps", steps=5, batch_size=16, loss="weighted",
                             label_smoothing=0.1)
            train_clip_classifier(train, labels, selected, cfg, 5, rng=torch.Generator().manual_seed(0))
        finally:
            handle.remove()
        counts.append(len(steps))
    assert counts == [5, 5]


def test_an_epoch_count_alone_selects_the_epoch_budget():
    assert make_config("ucf", "quick", **{"clip.epochs": 7}).clip.budget == "epochs"
    nested = {"epochs": 7}
    assert make_config("ucf", "quick", clip=nested).clip.budget == "epochs"
    assert nested == {"epochs": 7}  # the caller's dict is left as it was
    assert make_config("ucf", "quick", **{"clip.epochs": 7, "clip.budget": "steps"}).clip.budget == "steps"
    assert make_config("ucf", "quick", **{"clip.steps": 9}).clip.budget == ClipConfig().budget


def test_balanced_batches_take_half_from_each_side():
    # 30 samples of normal videos (indices 0-29) and 70 of abnormal ones (30-99)
    normal = torch.arange(100) < 30
    gen = torch.Generator().manual_seed(0)
    steps = ClipConfig(budget="steps", steps=6, batch_size=10, batches="balanced")
    for batch in clip_batches(normal, steps, gen):
        assert len(batch) == 10 and int(normal[batch].sum()) == 5
    # a pass ends with the smaller side: 30 normal samples in halves of 5 give 6 batches an epoch
    epochs = ClipConfig(budget="epochs", epochs=2, batch_size=10, batches="balanced")
    batches = list(clip_batches(normal, epochs, gen))
    assert len(batches) == 2 * 6
    first = torch.cat(batches[:6])
    assert sorted(first[normal[first]].tolist()) == list(range(30))  # every normal sample once
    assert len(set(first[~normal[first]].tolist())) == 30  # 30 distinct abnormal ones
    # one side empty: balancing is impossible and the batches are shuffled draws
    only_abnormal = list(clip_batches(torch.zeros(20, dtype=torch.bool), epochs, gen))
    assert sorted(torch.cat(only_abnormal[:2]).tolist()) == list(range(20))
