"""Sweeps as one batched model: every model of a batch against its run alone, stage by stage."""

import pytest
import torch
from torch.nn import functional as F

from cupl.experiments.batched import (
    BATCHED,
    StackedAdam,
    StackedClassifiers,
    StackedGenerators,
    Streams,
    batch_key,
    generator_dropout_shapes,
    pseudo_labels_many,
    run_many,
    score_clips_many,
    train_clip_classifiers,
    train_generators,
)
from cupl.config import make_config
from cupl.experiments.train import pseudo_labels, run, score_clips, stage1, train_clip_classifier
from cupl.method.models import ClipClassifier, MultiHeadClassifier, dropout, dropout_mask
from cupl.method.uncertainty import dropout_masks
from toy import toy_split

TINY = {"generator.steps": 6, "generator.batch_size": 4, "generator.mc_passes": 4, "clip.epochs": 2,
        "clip.batch_size": 96, "clip.mc_passes": 3, "self_train.iterations": 2}
# float summation order differs between a batched matmul and N single ones: weights and
# labels agree to this, AUCs to 1e-4 (measured: 1e-7 and exactly equal)
ATOL = 1e-5


@pytest.fixture(scope="module")
def data():
    train, oracle = toy_split(12, 12, seed=1)
    test, _ = toy_split(6, 6, seed=2, test=True)
    return train, test, oracle


def tiny(variant="full", **overrides):
    return make_config("xd", "smoke", variant, **{**TINY, **BATCHED, **overrides})


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol=ATOL):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=atol, msg=key)


def test_model_dropout_draws_its_masks_from_the_global_generator():
    """`dropout` draws its mask from the global RNG when given no generator; the same draws from
    a generator seeded alike give the same output, also for an input in permuted memory order
    (f_g's second dropout site)."""
    assert torch.equal(torch.Generator().manual_seed(5).get_state(), (torch.manual_seed(5), torch.get_rng_state())[1])
    h = torch.rand(6, 4, 2, 8)
    z = torch.einsum("...kh,kgh->...kg", h, torch.rand(2, 3, 8)) + torch.rand(2, 3)
    assert not z.is_contiguous()
    for x in (h, z):
        torch.manual_seed(3)
        expected = dropout(x, 0.6, training=True)
        noise = dropout_mask(x.shape, 0.6, generator=torch.Generator().manual_seed(3))
        assert torch.equal(x * noise, expected)
        assert len(noise.unique()) == 2


def test_generator_dropout_shapes_match_the_model():
    cfg = tiny().generator
    model = MultiHeadClassifier(16, cfg.num_heads, cfg.hidden, cfg.dropout)
    h = model.hidden1(torch.rand(8, cfg.num_segments, 16))
    z = torch.einsum("...kh,kgh->...kg", h, model.w2) + model.b2
    assert generator_dropout_shapes(cfg, 8, 16) == [tuple(h.shape), tuple(z.shape)]


def test_stacked_adam_equals_torch_adam_per_model():
    """Three models, each with its own gradients and its own number of steps (inactive steps
    skipped), against torch.optim.Adam(foreach=True) on each model alone."""
    torch.manual_seed(0)
    shapes = [(5, 7), (7,), (3, 5, 2)]
    init = [[torch.randn(s) for s in shapes] for _ in range(3)]
    grads = [[[torch.randn(s) for s in shapes] for _ in range(6)] for _ in range(3)]
    active = [[True] * 6, [True, False, True, True, False, False], [False, True] * 3]
    stacked = [torch.stack([init[n][i] for n in range(3)]).requires_grad_() for i in range(len(shapes))]
    opt = StackedAdam(stacked, lr=1e-2, weight_decay=5e-4)
    for t in range(6):
        for i, p in enumerate(stacked):
            p.grad = torch.stack([grads[n][t][i] if active[n][t] else torch.zeros(shapes[i]) for n in range(3)])
        opt.step([active[n][t] for n in range(3)])
    for n in range(3):
        alone = [x.clone().requires_grad_() for x in init[n]]
        ref = torch.optim.Adam(alone, lr=1e-2, weight_decay=5e-4, foreach=True)
        for t in range(6):
            if active[n][t]:
                for p, g in zip(alone, grads[n][t]):
                    p.grad = g.clone()
                ref.step()
        assert opt.steps[n] == sum(active[n])
        for p, q in zip(alone, stacked):
            torch.testing.assert_close(q[n].detach(), p.detach(), rtol=0, atol=1e-7)


def test_stage1_batched_equals_each_alone(data):
    train, _, _ = data
    configs = [tiny(seed=s, **{"generator.alpha": a}) for s in (0, 1) for a in (0.1, 2.0)]
    batched = train_generators(configs, train)
    for config, model in zip(configs, batched):
        assert_same_weights(stage1(config, train), model)


def test_stage1_shares_the_streams_of_one_seed_without_changing_the_models(data):
    """alpha = 0 and alpha = 0.1 of one seed train differently, yet alike: same init, bags, masks."""
    train, _, _ = data
    configs = [tiny(seed=4, **{"generator.alpha": a}) for a in (0.0, 0.1)] + [tiny(seed=5)]
    for config, model in zip(configs, train_generators(configs, train)):
        assert_same_weights(stage1(config, train), model)


@pytest.mark.parametrize("hidden", [(32, 8), (8, 4)])  # f_c's first layer on [c, m] (D <= h1) and projected (D > h1)
def test_mc_dropout_pseudo_labels_batched_equal_each_alone(data, hidden):
    train, _, _ = data
    torch.manual_seed(0)
    generators = [MultiHeadClassifier(16, 2, (24, 6), 0.6).eval() for _ in range(3)]
    classifiers = [ClipClassifier(32, hidden, 0.8).eval() for _ in range(3)]
    for models, stack, window, passes in ((generators, StackedGenerators, None, 7),
                                          (classifiers, StackedClassifiers, 3, 5)):
        masks = [dropout_masks(passes, getattr(m, "num_heads", 1), m.hidden, m.dropout,
                               torch.Generator().manual_seed(n)) for n, m in enumerate(models)]
        labels, unc = pseudo_labels_many(stack.stack(models, "cpu"), train, masks, window=window, batch_size=200)
        for n, m in enumerate(models):
            y, u = pseudo_labels(m, train, passes, window=window, rng=torch.Generator().manual_seed(n),
                                 batch_size=300)
            torch.testing.assert_close(labels[n], y, rtol=0, atol=1e-6)
            torch.testing.assert_close(unc[n], u, rtol=0, atol=1e-6)


def test_scoring_batched_equals_each_alone(data):
    _, test, _ = data
    torch.manual_seed(1)
    models = [ClipClassifier(32, (16, 4), 0.8, two_way=True).eval() for _ in range(2)]
    scores = score_clips_many(StackedClassifiers.stack(models, "cpu"), test, 5, batch_size=100)
    for n, m in enumerate(models):
        torch.testing.assert_close(scores[n], score_clips(m, test, 5, batch_size=400), rtol=0, atol=1e-6)


def test_fc_batched_equals_each_alone_with_own_set_sizes(data):
    """Three f_c on reliable sets of different sizes (so different numbers of batches and a
    ragged last batch), two of them of one seed and one size (sharing init and dropout draws)."""
    train, _, _ = data
    cfg = tiny().clip
    n_clips = train.num_clips
    torch.manual_seed(7)
    labels = torch.rand(3, n_clips)
    keep = torch.rand(3, n_clips)
    selected = torch.stack([keep[0] < 0.5, keep[1] < 0.5, keep[2] < 0.3])
    selected[1] = selected[0]  # model 1: model 0's set with other labels
    seeds = [11, 11, 12]
    streams = [Streams.seeded(s, torch.device("cpu")) for s in seeds]
    history = [(s, int(x.sum())) for s, x in zip(seeds, selected)]
    batched = train_clip_classifiers(train, labels, selected, cfg, 3, streams, history)
    for n, seed in enumerate(seeds):
        torch.manual_seed(seed)
        explicit = torch.Generator().manual_seed(seed)
        alone = train_clip_classifier(train, labels[n], selected[n], cfg, 3, rng=explicit)
        # the streams end where the run's do: the global RNG and the explicit generator
        assert torch.equal(streams[n].glob.get_state(), torch.get_rng_state())
        assert torch.equal(streams[n].explicit.get_state(), explicit.get_state())
        assert_same_weights(alone, batched.model(n))
    assert len(set(history)) == 2


def test_run_many_equals_run_for_a_small_grid(data):
    train, test, oracle = data
    configs = [tiny(seed=s, **{"generator.alpha": a}) for a in (0.1, 1.0) for s in (0, 1)]
    configs += [tiny("standard", seed=0), tiny("baseline", seed=1)]
    batched = run_many(configs, train, test, oracle=oracle, keep_arrays=True)
    for config, b in zip(configs, batched):
        a = run(config, train, test, oracle=oracle, progress=False, keep_arrays=True)
        assert b.config == a.config
        assert len(b.history) == len(a.history) == config.self_train.iterations
        for x, y in zip(a.history, b.history):
            assert x.keys() == y.keys()
            assert x["selected"] == y["selected"]
            assert abs(x["auc"] - y["auc"]) <= 1e-4
            assert abs(x["label_auc"] - y["label_auc"]) <= 1e-4
        for x, y in zip(a.arrays, b.arrays):
            assert torch.equal(x["selected"], y["selected"])
            torch.testing.assert_close(x["labels"], y["labels"], rtol=0, atol=ATOL)
            torch.testing.assert_close(x["uncertainty"], y["uncertainty"], rtol=0, atol=ATOL)
        assert_same_weights(a.f_g, b.f_g)
        assert_same_weights(a.f_c, b.f_c)
        torch.testing.assert_close(a.test_scores, b.test_scores, rtol=0, atol=ATOL)
        assert b.metrics == b.history[-1]


def test_run_many_repeats_bit_identically(data):
    train, test, _ = data
    configs = [tiny(seed=0, **{"generator.alpha": a}) for a in (0.1, 1.0)] + [tiny(seed=1)]
    first, second = run_many(configs, train, test), run_many(configs, train, test)
    for a, b in zip(first, second):
        assert torch.equal(a.test_scores, b.test_scores)
        for x, y in ((a.f_g, b.f_g), (a.f_c, b.f_c)):
            assert_same_weights(x, y, atol=0)


def test_batches_group_by_shape_and_keep_input_order(data):
    train, test, _ = data
    configs = [tiny(seed=0, **{"generator.num_heads": 3}), tiny(seed=0), tiny(seed=1, **{"generator.num_heads": 3})]
    assert batch_key(configs[0]) == batch_key(configs[2]) != batch_key(configs[1])
    assert batch_key(tiny(seed=3, **{"generator.alpha": 5.0})) == batch_key(tiny("standard"))
    trained = {}
    results = run_many(configs, train, test, max_models=1, generators=trained)
    assert [r.config["generator"]["num_heads"] for r in results] == [3, 2, 3]
    assert len(trained) == 3 and all(any(m is r.f_g for m in trained.values()) for r in results)
    assert [r.config["seed"] for r in results] == [0, 0, 1]
    with pytest.raises(ValueError, match="max_models"):
        run_many(configs, train, test, max_models=0)


def test_settings_it_does_not_reproduce_are_refused(data):
    train, test, oracle = data
    with pytest.raises(ValueError, match=r"clip.budget = 'steps'"):
        run_many([make_config("xd", "smoke", **{**TINY, **BATCHED, "clip.budget": "steps"})], train, test)
