"""Eq. 2, 3, 6, 7 and 11 against hand-computed values and a plain-numpy reference."""

import math

import numpy as np
import pytest
import torch

from cupl.losses import clip_loss, diversity_loss, generator_loss, mil_ranking_loss, norm_loss


# ---- plain numpy references, written from the paper's equations -----------------------------

def np_softmax(a):
    e = np.exp(a - a.max())
    return e / e.sum()


def np_diversity(heads):
    """Eq. 1-2 per video, averaged over videos. heads: [B, K, S]."""
    per_video = []
    for video in heads:
        p = [np_softmax(h) for h in video]
        k = len(p)
        cos = [p[i] @ p[j] / (np.linalg.norm(p[i]) * np.linalg.norm(p[j]))
               for i in range(k - 1) for j in range(i + 1, k)]
        per_video.append(sum(cos) / (k * (k - 1) / 2))
    return float(np.mean(per_video))


def np_norm(heads):
    """Eq. 3 per video, averaged over videos."""
    return float(np.mean([np.mean([np.linalg.norm(h) for h in v]) - np.linalg.norm(v.mean(0)) for v in heads]))


def np_mil(abnormal, normal):
    """Eq. 6 per pair, averaged over pairs."""
    return float(np.mean([max(0.0, 1 - a.max() + n.max()) for a, n in zip(abnormal, normal)]))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---- MIL ranking loss (Eq. 5-6) -----------------------------------------------------------

def test_mil_by_hand():
    # pair 1: max a = 0.9, max n = 0.4 -> 1 - 0.9 + 0.4 = 0.5
    # pair 2: max a = 0.6, max n = 0.7 -> 1 - 0.6 + 0.7 = 1.1;  mean = 0.8
    abnormal = torch.tensor([[0.2, 0.9, 0.1], [0.6, 0.5, 0.55]])
    normal = torch.tensor([[0.3, 0.4, 0.0], [0.7, 0.1, 0.2]])
    assert mil_ranking_loss(abnormal, normal).item() == pytest.approx(0.8, abs=1e-7)


def test_mil_zero_when_margin_at_least_one():
    # max a = 1 and max n = 0 in every pair: 1 - 1 + 0 = 0 (the only margin >= 1 in [0, 1])
    abnormal = torch.tensor([[0.0, 1.0, 0.3], [1.0, 1.0, 1.0]])
    normal = torch.zeros(2, 3)
    assert mil_ranking_loss(abnormal, normal).item() == 0.0
    # the hinge clips at zero rather than rewarding a larger margin
    assert mil_ranking_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]])).item() == 0.0


def test_mil_matches_reference_on_random_pairs():
    rng = np.random.default_rng(0)
    a, n = rng.uniform(size=(6, 32)), rng.uniform(size=(6, 32))
    assert mil_ranking_loss(torch.from_numpy(a), torch.from_numpy(n)).item() == pytest.approx(np_mil(a, n), abs=1e-12)


def test_mil_bad_shapes():
    with pytest.raises(ValueError, match=r"abnormal.*\[B, S\].*\(3,\)"):
        mil_ranking_loss(torch.zeros(3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        mil_ranking_loss(torch.zeros(2, 3), torch.zeros(3, 3))


# ---- diversity (Eq. 1-2) ------------------------------------------------------------------

def test_diversity_of_identical_heads_is_one():
    head = torch.randn(3, 1, 7, generator=torch.Generator().manual_seed(0))
    assert diversity_loss(head.expand(3, 2, 7)).item() == pytest.approx(1.0, abs=1e-6)
    assert diversity_loss(head.expand(3, 4, 7)).item() == pytest.approx(1.0, abs=1e-6)


def test_diversity_of_disjoint_heads_is_zero():
    # logits +-50: each head's softmax is one-hot up to e^-100, on different segments
    heads = torch.full((1, 3, 4), -50.0)
    heads[0, 0, 0] = heads[0, 1, 1] = heads[0, 2, 3] = 50.0
    assert diversity_loss(heads).item() == pytest.approx(0.0, abs=1e-12)


def test_diversity_by_hand_three_heads():
    # head 0 logits [0, 0, 0]       -> p0 = (1/3, 1/3, 1/3)
    # head 1 logits [ln 2, 0, 0]    -> p1 = (2, 1, 1) / 4 = (0.5, 0.25, 0.25)
    # head 2 logits [0, 0, ln 3]    -> p2 = (1, 1, 3) / 5 = (0.2, 0.2, 0.6)
    # cos(p0, p1) = (1/3) / (sqrt(1/3) sqrt(0.375))  = 1 / sqrt(1.125)  = 0.9428090
    # cos(p0, p2) = (1/3) / (sqrt(1/3) sqrt(0.44))   = 1 / sqrt(1.32)   = 0.8703883
    # cos(p1, p2) = (0.1 + 0.05 + 0.15) / sqrt(0.375 * 0.44) = 0.3 / sqrt(0.165) = 0.7385489
    # Z = 3 * 2 / 2 = 3 pairs: (0.9428090 + 0.8703883 + 0.7385489) / 3 = 0.8505821
    heads = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0], [0.0, 0.0, math.log(3)]]])
    assert diversity_loss(heads).item() == pytest.approx(0.8505821, abs=1e-6)
    assert np_diversity(heads.numpy().astype(np.float64)) == pytest.approx(0.8505821, abs=1e-6)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_diversity_matches_reference(k):
    heads = np.random.default_rng(k).normal(scale=2.0, size=(4, k, 32))
    assert diversity_loss(torch.from_numpy(heads)).item() == pytest.approx(np_diversity(heads), abs=1e-10)


def test_diversity_needs_two_heads():
    with pytest.raises(ValueError, match=r"K >= 2.*\(2, 1, 5\)"):
        diversity_loss(torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match=r"\[B, K, S\].*\(2, 5\)"):
        diversity_loss(torch.zeros(2, 5))


# ---- norm regulariser (Eq. 3) ---------------------------------------------------------------

def test_norm_by_hand():
    # video 1: A1 = (3, 4), A2 = (4, -3); ||A1|| = ||A2|| = 5; A_avg = (3.5, 0.5), ||A_avg|| = sqrt(12.5)
    #          -> (5 + 5) / 2 - 3.5355339 = 1.4644661
    # video 2: identical heads -> 0;   mean over videos = 0.7322330
    heads = torch.tensor([[[3.0, 4.0], [4.0, -3.0]], [[1.0, 2.0], [1.0, 2.0]]])
    assert norm_loss(heads).item() == pytest.approx(0.7322330, abs=1e-6)


def test_norm_is_zero_for_identical_heads():
    head = torch.randn(5, 1, 32, generator=torch.Generator().manual_seed(1))
    assert norm_loss(head.expand(5, 3, 32)).item() == pytest.approx(0.0, abs=1e-5)


def test_norm_is_nonnegative_and_matches_reference():
    rng = np.random.default_rng(2)
    for _ in range(50):
        k = int(rng.integers(1, 6))
        heads = rng.normal(scale=rng.uniform(0.1, 10), size=(3, k, 32))
        value = norm_loss(torch.from_numpy(heads)).item()
        assert value >= -1e-12
        assert value == pytest.approx(np_norm(heads), abs=1e-9)


# ---- stage-1 objective (Eq. 7) ------------------------------------------------------------

def test_generator_loss_is_mil_plus_alpha_diversity_plus_alpha_norm():
    rng = np.random.default_rng(3)
    a, n = rng.normal(size=(4, 2, 32)), rng.normal(size=(4, 2, 32))
    alpha = 0.7
    parts = generator_loss(torch.from_numpy(a), torch.from_numpy(n), alpha=alpha, head_scores="logits")
    mil = np_mil(sigmoid(a.mean(1)), sigmoid(n.mean(1)))  # Eq. 4: sigmoid of A_avg
    div, nrm = np_diversity(a), np_norm(a)  # on abnormal bags by default
    assert parts["mil"].item() == pytest.approx(mil, abs=1e-10)
    assert parts["diversity"].item() == pytest.approx(div, abs=1e-10)
    assert parts["norm"].item() == pytest.approx(nrm, abs=1e-10)
    assert parts["loss"].item() == pytest.approx(mil + alpha * div + alpha * nrm, abs=1e-10)


def test_generator_loss_on_normal_bags_too():
    rng = np.random.default_rng(4)
    a, n = rng.normal(size=(3, 3, 8)), rng.normal(size=(3, 3, 8))
    parts = generator_loss(torch.from_numpy(a), torch.from_numpy(n), alpha=2.0, on_normal=True, head_scores="logits")
    both = np.concatenate([a, n])
    assert parts["diversity"].item() == pytest.approx(np_diversity(both), abs=1e-10)
    assert parts["norm"].item() == pytest.approx(np_norm(both), abs=1e-10)


def test_generator_loss_sigmoid_head_scores_enter_eq_1_to_3():
    # default: A^k of Eq. 1-3 is each head's sigmoid score (Sec. 4.2); Eq. 4 still averages logits
    rng = np.random.default_rng(6)
    a, n = rng.normal(size=(4, 2, 16)) * 3, rng.normal(size=(4, 2, 16)) * 3
    alpha = 1.5
    parts = generator_loss(torch.from_numpy(a), torch.from_numpy(n), alpha=alpha)
    mil = np_mil(sigmoid(a.mean(1)), sigmoid(n.mean(1)))
    div, nrm = np_diversity(sigmoid(a)), np_norm(sigmoid(a))
    assert parts["mil"].item() == pytest.approx(mil, abs=1e-10)
    assert parts["diversity"].item() == pytest.approx(div, abs=1e-10)
    assert parts["norm"].item() == pytest.approx(nrm, abs=1e-10)
    assert parts["loss"].item() == pytest.approx(mil + alpha * (div + nrm), abs=1e-10)
    with pytest.raises(ValueError, match="head_scores"):
        generator_loss(torch.from_numpy(a), torch.from_numpy(n), head_scores="softmax")


def test_single_head_or_no_diversity_is_plain_mil():
    rng = np.random.default_rng(5)
    a, n = rng.normal(size=(4, 1, 32)), rng.normal(size=(4, 1, 32))
    parts = generator_loss(torch.from_numpy(a), torch.from_numpy(n), alpha=10.0)
    assert set(parts) == {"mil", "loss"}
    assert parts["loss"].item() == pytest.approx(np_mil(sigmoid(a[:, 0]), sigmoid(n[:, 0])), abs=1e-10)
    a2, n2 = rng.normal(size=(4, 2, 32)), rng.normal(size=(4, 2, 32))
    parts = generator_loss(torch.from_numpy(a2), torch.from_numpy(n2), alpha=10.0, diversity=False)
    assert set(parts) == {"mil", "loss"}
    assert parts["loss"].item() == pytest.approx(np_mil(sigmoid(a2.mean(1)), sigmoid(n2.mean(1))), abs=1e-10)


# ---- readings of the batch reduction and of Eq. 3 -----------------------------------------

def test_mil_summed_over_pairs_by_hand():
    # the pairs of test_mil_by_hand: hinges 0.5 and 1.1, summed 1.6
    abnormal = torch.tensor([[0.2, 0.9, 0.1], [0.6, 0.5, 0.55]])
    normal = torch.tensor([[0.3, 0.4, 0.0], [0.7, 0.1, 0.2]])
    assert mil_ranking_loss(abnormal, normal, "sum").item() == pytest.approx(1.6, abs=1e-6)


def test_diversity_summed_over_bags_by_hand():
    # bag 1: identical heads, cosine 1. bag 2: heads [0, log 3] and [log 3, 0]: softmax
    # [1/4, 3/4] and [3/4, 1/4], cosine (3/16 + 3/16) / (10/16) = 0.6. Sum 1.6, mean 0.8.
    l3 = math.log(3.0)
    heads = torch.tensor([[[0.0, 1.0], [0.0, 1.0]], [[0.0, l3], [l3, 0.0]]], dtype=torch.float64)
    assert diversity_loss(heads, "sum").item() == pytest.approx(1.6, abs=1e-12)
    assert diversity_loss(heads, "mean").item() == pytest.approx(0.8, abs=1e-12)


def test_paper_norm_summed_over_bags_by_hand():
    # bag 1: heads [3, 4] and [0, 0]: (5 + 0) / 2 - ||[1.5, 2]|| = 2.5 - 2.5 = 0 (parallel)
    # bag 2: heads [1, 0] and [0, 1]: (1 + 1) / 2 - ||[0.5, 0.5]|| = 1 - sqrt(0.5)
    heads = torch.tensor([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    bag2 = 1 - math.sqrt(0.5)
    assert norm_loss(heads, "sum").item() == pytest.approx(bag2, abs=1e-12)
    assert norm_loss(heads, "mean", "paper").item() == pytest.approx(bag2 / 2, abs=1e-12)


def test_cmcs_norm_by_hand():
    # [13]: n_k = mean_s |A^k_s|, loss = mean_k |n_k - mean_j n_j|.
    # bag 1: heads [3, -4] and [0, 0]: n = 3.5, 0; mean 1.75; deviations 1.75, 1.75 -> 1.75
    # bag 2: heads [1, 0] and [0, 1]: n = 0.5, 0.5 -> 0 (equal scale, however different)
    heads = torch.tensor([[[3.0, -4.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    assert norm_loss(heads, "mean", "cmcs").item() == pytest.approx(1.75 / 2, abs=1e-12)
    assert norm_loss(heads, "sum", "cmcs").item() == pytest.approx(1.75, abs=1e-12)
    # three heads, scales 1, 2, 6 (mean 3): deviations 2, 1, 3 -> 2
    three = torch.tensor([[[1.0, -1.0], [2.0, 2.0], [-6.0, 6.0]]], dtype=torch.float64)
    assert norm_loss(three, form="cmcs").item() == pytest.approx(2.0, abs=1e-12)


def np_cmcs_norm(heads):
    """[13]'s norm term per video (mean absolute value per head, mean absolute deviation over
    heads), averaged over videos, as a plain loop."""
    out = []
    for video in heads:
        scale = [np.mean(np.abs(h)) for h in video]
        out.append(np.mean([abs(x - np.mean(scale)) for x in scale]))
    return float(np.mean(out))


def test_generator_loss_readings_combine_as_written():
    # summed hinge, summed regularisers, [13]'s norm, logits, on normal bags too
    rng = np.random.default_rng(7)
    a, n = rng.normal(size=(3, 2, 8)), rng.normal(size=(3, 2, 8))
    alpha = 0.3
    parts = generator_loss(torch.from_numpy(a), torch.from_numpy(n), alpha=alpha, on_normal=True,
                           head_scores="logits", mil_reduction="sum", regularizer_reduction="sum", norm_form="cmcs")
    both = np.concatenate([a, n])
    mil = 3 * np_mil(sigmoid(a.mean(1)), sigmoid(n.mean(1)))
    div, nrm = 6 * np_diversity(both), 6 * np_cmcs_norm(both)
    assert parts["mil"].item() == pytest.approx(mil, abs=1e-10)
    assert parts["diversity"].item() == pytest.approx(div, abs=1e-10)
    assert parts["norm"].item() == pytest.approx(nrm, abs=1e-10)
    assert parts["loss"].item() == pytest.approx(mil + alpha * (div + nrm), abs=1e-10)
    # summed hinge, averaged regularisers, sigmoid scores, abnormal bags only
    parts = generator_loss(torch.from_numpy(a), torch.from_numpy(n), alpha=alpha, mil_reduction="sum")
    assert parts["mil"].item() == pytest.approx(mil, abs=1e-10)
    assert parts["diversity"].item() == pytest.approx(np_diversity(sigmoid(a)), abs=1e-10)
    assert parts["norm"].item() == pytest.approx(np_norm(sigmoid(a)), abs=1e-10)


def test_bad_reading_names():
    x = torch.zeros(2, 2, 4)
    with pytest.raises(ValueError, match="reduction.*'avg'"):
        generator_loss(x, x, mil_reduction="avg")
    with pytest.raises(ValueError, match="reduction.*'total'"):
        generator_loss(x, x, regularizer_reduction="total")
    with pytest.raises(ValueError, match="form.*'l1'"):
        generator_loss(x, x, norm_form="l1")


def test_generator_loss_bad_shapes():
    with pytest.raises(ValueError, match=r"normal_heads.*\(4, 32\)"):
        generator_loss(torch.zeros(4, 2, 32), torch.zeros(4, 32))


# ---- f_c objective (Eq. 11) ---------------------------------------------------------------

def test_clip_loss_by_hand():
    # logit 0 -> p = 0.5, label 0.5: -(0.5 ln 0.5 + 0.5 ln 0.5) = ln 2 = 0.6931472
    # logit ln 3 -> p = 0.75, label 1: -ln 0.75 = 0.2876821
    # logit -ln 4 -> p = 0.2, label 0: -ln 0.8 = 0.2231436;   mean = 1.2039728 / 3 = 0.4013243
    logits = torch.tensor([0.0, math.log(3), -math.log(4)])
    labels = torch.tensor([0.5, 1.0, 0.0])
    assert clip_loss(logits, labels).item() == pytest.approx(0.4013243, abs=1e-6)


def test_clip_loss_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        clip_loss(torch.zeros(3), torch.zeros(4))
