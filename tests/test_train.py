"""Algorithm 1 end to end on a tiny in-test dataset, and the pieces of a run that the ablations switch."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cupl.config import make_config
from cupl.evaluate import evaluate_scores
from cupl.mining import context_features, reliable_indices, temporal_context
from cupl.models import ClipClassifier, MultiHeadClassifier
from cupl.experiments.steps import memory_table
from cupl.experiments.train import pseudo_labels, run, score_clips, select_reliable, train_clip_classifier
from cupl.uncertainty import mc_dropout
from toy import toy_split

# Settings for the learning check. The paper's XD preset (alpha 0.1, R 0.7) with two iterations;
# f_c gets enough epochs to become confident on the toy events. Measured over seeds 0-13 with these
# splits, every run ended above 0.89 AUC. With alpha = 10 (the UCF preset) on these 16-d features
# the diversity term outweighs L_MIL, stage 1 saturates and about half of the seeds learn inverted
# scores; with few f_c epochs the second iteration drops the event clips as the uncertain ones.
LEARN = {"generator.steps": 100, "clip.epochs": 60, "clip.batch_size": 64, "self_train.iterations": 2}
# Settings for checks that need a run, not a good one.
TINY = {"generator.steps": 3, "generator.batch_size": 4, "generator.mc_passes": 4, "clip.epochs": 1,
        "clip.batch_size": 512, "clip.mc_passes": 3}


@pytest.fixture(scope="module")
def data():
    train, oracle = toy_split(16, 16, seed=1)
    test, _ = toy_split(8, 8, seed=2, test=True)
    return train, test, oracle


@pytest.fixture(scope="module")
def learned(data):
    train, test, _ = data
    config = make_config("xd", "smoke", "full", seed=0, **LEARN)
    return config, run(config, train, test, progress=False), run(config, train, test, progress=False)


def tiny(variant="full", **overrides):
    return make_config("ucf", "smoke", variant, **{**TINY, **overrides})


def test_seeded_run_beats_chance(learned, data):
    _, result, _ = learned
    _, test, _ = data
    assert [h["iteration"] for h in result.history] == [1, 2]
    assert [h["source"] for h in result.history] == ["f_g", "f_c"]
    assert [h["mc_passes"] for h in result.history] == [50, 5]  # Sec. 4.2: M = 50 for f_g, 5 for f_c
    assert result.metrics["auc"] > 0.8
    # the reported metrics are the final model's, recomputed here from its scores
    assert result.metrics == result.history[-1]
    assert result.metrics["auc"] == pytest.approx(evaluate_scores(result.test_scores, test)["auc"])
    assert result.test_scores.shape == (test.num_clips,)


def test_repeated_run_is_bit_identical(learned):
    _, a, b = learned
    assert torch.equal(a.test_scores, b.test_scores)
    for model_a, model_b in ((a.f_g, b.f_g), (a.f_c, b.f_c)):
        state_a, state_b = model_a.state_dict(), model_b.state_dict()
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a.history == b.history


def test_final_classifier_scores_are_its_own(learned, data):
    # score_clips: f_c in eval mode on temporal features, probabilities averaged over the crops
    _, result, _ = learned
    _, test, _ = data
    f_c = result.f_c.eval()
    x = context_features(test.features, test.starts, torch.arange(test.num_clips), 5)  # [N, C, 2D]
    with torch.no_grad():
        expected = torch.sigmoid(f_c(x)).mean(dim=1)
    torch.testing.assert_close(result.test_scores, expected)


def test_different_seeds_differ(data):
    train, test, _ = data
    a = run(tiny(seed=0), train, test, progress=False)
    b = run(tiny(seed=1), train, test, progress=False)
    assert not torch.equal(a.test_scores, b.test_scores)
    assert not torch.equal(a.f_g.fc1.weight, b.f_g.fc1.weight)


def test_run_does_not_touch_the_global_rng(data):
    train, test, _ = data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(tiny(), train, test, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_non_finite_features_are_rejected(data):
    train, test, _ = data
    bad = train.features.clone()
    bad[5, 1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"train.*features.*non-finite.*\(\d+, 2, 16\)"):
        run(tiny(), replace(train, features=bad), test, progress=False)
    bad = test.features.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"test.*features.*non-finite"):
        run(tiny(), train, replace(test, features=bad), progress=False)


def test_split_without_normal_or_abnormal_videos(data):
    train, test, _ = data
    abnormal_only = train.subset(torch.nonzero(train.labels == 1).flatten())
    with pytest.raises(ValueError, match="0 normal"):
        run(tiny(), abnormal_only, test, progress=False)
    normal_only = train.subset(torch.nonzero(train.labels == 0).flatten())
    with pytest.raises(ValueError, match="0 abnormal"):
        run(tiny(), normal_only, test, progress=False)


def _counts(mask: torch.Tensor, split) -> list[int]:
    return [int(mask[a:b].sum()) for a, b in zip(split.offsets[:-1].tolist(), split.offsets[1:].tolist())]


def test_selection_modes(data):
    train, _, _ = data
    unc = torch.rand(train.num_clips, generator=torch.Generator().manual_seed(0))
    st = make_config("ucf", "smoke").self_train  # R = 0.5
    ours = select_reliable(unc, train, st)
    random = select_reliable(unc, train, replace(st, selection="random"), torch.Generator().manual_seed(1))
    everything = select_reliable(unc, train, replace(st, selection="all"))
    lengths = train.lengths.tolist()
    assert _counts(ours, train) == [max(1, -(-t // 2)) for t in lengths]  # ceil(T / 2)
    assert _counts(random, train) == _counts(ours, train)
    assert not torch.equal(random, ours)
    assert bool(everything.all())
    for a, b in zip(train.offsets[:-1].tolist(), train.offsets[1:].tolist()):
        chosen = torch.nonzero(ours[a:b]).flatten()
        assert torch.equal(chosen, reliable_indices(unc[a:b], 0.5))
    again = select_reliable(unc, train, replace(st, selection="random"), torch.Generator().manual_seed(1))
    assert torch.equal(random, again)


def test_standard_self_training_keeps_the_same_counts_in_a_run(data):
    train, test, _ = data
    ours = run(tiny("full"), train, test, progress=False, keep_arrays=True)
    standard = run(tiny("standard"), train, test, progress=False, keep_arrays=True)
    for a, b in zip(ours.arrays, standard.arrays):
        assert _counts(a["selected"], train) == _counts(b["selected"], train)
    assert not all(torch.equal(a["selected"], b["selected"]) for a, b in zip(ours.arrays, standard.arrays))
    baseline = run(tiny("baseline"), train, test, progress=False, keep_arrays=True)
    assert len(baseline.arrays) == 1 and bool(baseline.arrays[0]["selected"].all())
    assert baseline.f_g.num_heads == 1


def test_normal_video_labels(data):
    train, test, _ = data
    normal = (train.labels == 0).repeat_interleave(train.lengths)
    zero = run(tiny(), train, test, progress=False, keep_arrays=True)
    for arrays in zero.arrays:
        assert bool((arrays["labels"][normal] == 0).all())
        assert bool((arrays["labels"][~normal] > 0).all())
    pseudo = run(tiny(**{"self_train.normal_labels": "pseudo"}), train, test, progress=False, keep_arrays=True)
    for arrays in pseudo.arrays:
        assert bool((arrays["labels"][normal] > 0).all())


def test_crops_mean_runs(data):
    train, test, _ = data
    result = run(tiny(crops="mean"), train, test, progress=False, keep_arrays=True)
    assert result.test_scores.shape == (test.num_clips,)
    assert result.arrays[0]["labels"].shape == (train.num_clips,)


def test_oracle_diagnostics_do_not_change_training(data):
    train, test, oracle = data
    plain = run(tiny(), train, test, progress=False)
    with_oracle = run(tiny(), train, test, progress=False, oracle=oracle)
    assert torch.equal(plain.test_scores, with_oracle.test_scores)
    assert 0.0 <= with_oracle.history[-1]["label_auc"] <= 1.0


def test_pseudo_labels_average_mc_dropout_over_crops(data):
    # one mask set for all clips and crops: per crop, the statistics equal mc_dropout's with that seed
    train, _, _ = data
    torch.manual_seed(0)
    f_g = MultiHeadClassifier(16, 2, hidden=(32, 8)).eval()
    labels, unc = pseudo_labels(f_g, train, 7, rng=torch.Generator().manual_seed(3))
    per_crop = [mc_dropout(f_g, train.features[:, c], 7, torch.Generator().manual_seed(3)) for c in range(2)]
    torch.testing.assert_close(labels, (per_crop[0][0] + per_crop[1][0]) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(unc, (per_crop[0][1] + per_crop[1][1]) / 2, rtol=0, atol=1e-6)

    f_c = ClipClassifier(32, hidden=(16, 4)).eval()
    labels, unc = pseudo_labels(f_c, train, 5, window=3, rng=torch.Generator().manual_seed(4), batch_size=100)
    x = context_features(train.features, train.starts, torch.arange(train.num_clips), 3)
    per_crop = [mc_dropout(f_c, x[:, c], 5, torch.Generator().manual_seed(4)) for c in range(2)]
    torch.testing.assert_close(labels, (per_crop[0][0] + per_crop[1][0]) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(unc, (per_crop[0][1] + per_crop[1][1]) / 2, rtol=0, atol=1e-6)


def test_pseudo_labels_with_masks_per_clip(data):
    # every (clip, crop) row of the split draws its own masks, in row order: as mc_per_clip on all rows
    from cupl.method.uncertainty import mc_per_clip

    train, _, _ = data
    torch.manual_seed(0)
    f_g = MultiHeadClassifier(16, 2, hidden=(32, 8)).eval()
    labels, unc = pseudo_labels(f_g, train, 7, rng=torch.Generator().manual_seed(3), masks="per_clip")
    with torch.no_grad():
        mean, var = mc_per_clip(f_g.hidden1(train.features.flatten(0, 1)), f_g.head_weights(), 7, f_g.dropout,
                                torch.Generator().manual_seed(3))
    torch.testing.assert_close(labels, mean.view(-1, 2).mean(dim=1), rtol=0, atol=1e-6)
    torch.testing.assert_close(unc, var.view(-1, 2).mean(dim=1), rtol=0, atol=1e-6)
    shared, _ = pseudo_labels(f_g, train, 7, rng=torch.Generator().manual_seed(3))
    assert not torch.equal(labels, shared)
    with pytest.raises(ValueError, match="masks must be 'shared' or 'per_clip', got 'each'"):
        pseudo_labels(f_g, train, 7, masks="each")


def test_run_with_masks_per_clip(data):
    train, test, _ = data
    config = tiny(**{"self_train.mc_masks": "per_clip"})
    result = run(config, train, test, progress=False, keep_arrays=True)
    shared = run(tiny(), train, test, progress=False, keep_arrays=True)
    assert len(result.history) == config.self_train.iterations
    # the switch acts after stage 1: the same f_g, other pseudo labels from its first MC-Dropout on
    for a, b in zip(result.f_g.state_dict().values(), shared.f_g.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(result.arrays[0]["labels"], shared.arrays[0]["labels"])


def test_score_clips_by_video_equals_split(data):
    _, test, _ = data
    torch.manual_seed(0)
    f_c = ClipClassifier(32, hidden=(16, 4)).eval()
    scores = score_clips(f_c, test, 5, batch_size=64)
    for v in (0, 9, test.num_videos - 1):
        a, b = int(test.offsets[v]), int(test.offsets[v + 1])
        with torch.no_grad():
            expected = torch.sigmoid(f_c(temporal_context(test.features[a:b], 5))).mean(dim=1)
        torch.testing.assert_close(scores[a:b], expected)
    assert np.isfinite(scores.numpy()).all()


def plain_memory(split, window: int) -> np.ndarray:
    """[N, C, D] mean of the w previous clips of the same video, c_0 itself at a video's start."""
    feats, off = split.features.numpy().astype(np.float64), split.offsets.tolist()
    out = np.empty_like(feats)
    for a, b in zip(off[:-1], off[1:]):
        for t in range(b - a):
            out[a + t] = feats[a] if t == 0 else feats[a + max(0, t - window):a + t].mean(axis=0)
    return out


def test_memory_table_of_selected_clips_by_hand(data):
    train, _, _ = data
    rows = torch.tensor([0, 1, 2, 7, 30, train.num_clips - 1])
    table = memory_table(train, rows, window=3, chunk=5)  # 2 clips of 2 crops per chunk
    expected = torch.from_numpy(plain_memory(train, 3)[rows.numpy()]).float()
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=1e-6)


def test_clip_classifier_equals_a_plain_loop_on_built_temporal_features(data):
    train, _, _ = data
    cfg = make_config("ucf", "smoke", **{"clip.epochs": 2, "clip.batch_size": 37, "clip.hidden": (8, 4),
                                         "clip.batches": "shuffled"}).clip
    g = torch.Generator().manual_seed(0)
    labels, selected = torch.rand(train.num_clips, generator=g), torch.rand(train.num_clips, generator=g) < 0.5
    torch.manual_seed(5)
    model = train_clip_classifier(train, labels, selected, cfg, 3, rng=torch.Generator().manual_seed(1))
    # the plain loop: every (selected clip, crop) a sample, temporal features built in numpy
    built = torch.from_numpy(np.concatenate([train.features.numpy(), plain_memory(train, 3)], -1)).float()
    rows = torch.nonzero(selected).flatten()
    crops = train.features.shape[1]
    sample_rows, sample_crops = rows.repeat_interleave(crops), torch.arange(crops).repeat(len(rows))
    torch.manual_seed(5)
    ref = ClipClassifier(built.shape[-1], cfg.hidden, cfg.dropout)
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(1)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(sample_rows), generator=gen).split(cfg.batch_size):
            r, c = sample_rows[batch], sample_crops[batch]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(ref(built[r, c]), labels[r])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
