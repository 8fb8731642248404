"""Configuration: the paper's numbers (Sec. 4.2, 4.5), Table 4's variants, strict keys, round trip."""

import json

import pytest

from cupl.config import RunConfig, from_dict, make_config, to_dict

# (alpha, j, R) per dataset, Sec. 4.2 / 4.5 of the paper
PAPER = {"ucf": (10.0, 3, 0.5), "xd": (0.1, 3, 0.7), "tad": (0.1, 5, 0.3)}


@pytest.mark.parametrize("preset", list(PAPER))
def test_presets_carry_the_papers_numbers(preset):
    cfg = make_config(preset, "full", "full")
    alpha, iterations, ratio = PAPER[preset]
    assert cfg.dataset == preset
    assert cfg.generator.alpha == alpha
    assert cfg.self_train.iterations == iterations
    assert cfg.self_train.ratio == ratio
    # shared by all datasets
    g, c, st = cfg.generator, cfg.clip, cfg.self_train
    assert (g.num_heads, g.hidden, g.dropout, g.lr, g.mc_passes, g.num_segments) == (2, (512, 128), 0.6, 0.1, 50, 32)
    assert g.diversity is True
    assert (c.hidden, c.dropout, c.lr, c.weight_decay, c.mc_passes) == ((512, 32), 0.8, 1e-4, 5e-4, 5)
    assert st.window == 5 and st.selection == "uncertainty"


def test_profiles_change_compute_not_method():
    smoke, full = make_config("ucf", "smoke"), make_config("ucf", "full")
    assert smoke.generator.steps < full.generator.steps and smoke.clip.epochs < full.clip.epochs
    for cfg in (smoke, full):
        assert (cfg.generator.alpha, cfg.generator.num_heads, cfg.self_train.ratio) == (10.0, 2, 0.5)


def test_variants_set_what_table_4_says():
    base = make_config("ucf", "full", "baseline")  # MIL generator, all pseudo labels
    assert (base.generator.num_heads, base.generator.diversity, base.self_train.selection) == (1, False, "all")
    comp = make_config("ucf", "full", "completeness")  # + multi-head with diversity, still all labels
    assert (comp.generator.num_heads, comp.generator.diversity, comp.self_train.selection) == (2, True, "all")
    assert base.self_train.iterations == comp.self_train.iterations == 1
    unc = make_config("ucf", "full", "uncertainty")  # + iterative uncertainty-aware refinement only
    assert (unc.generator.num_heads, unc.generator.diversity, unc.self_train.selection) == (1, False, "uncertainty")
    assert unc.self_train.iterations == 3
    full = make_config("ucf", "full", "full")
    assert (full.generator.num_heads, full.generator.diversity, full.self_train.selection) == (2, True, "uncertainty")
    std = make_config("ucf", "full", "standard")  # Fig. 3: random clips, same count, same iterations
    assert std.self_train.selection == "random"
    assert (std.self_train.ratio, std.self_train.iterations, std.generator.num_heads) == (0.5, 3, 2)


def test_overrides_dotted_and_nested():
    cfg = make_config("xd", "quick", **{"generator.alpha": 1.0, "seed": 3, "clip": {"epochs": 7}})
    assert (cfg.generator.alpha, cfg.seed, cfg.clip.epochs) == (1.0, 3, 7)
    assert cfg.self_train.ratio == 0.7  # the preset's other values stay


def test_unknown_keys_are_rejected_naming_the_key():
    with pytest.raises(KeyError, match="generator.alpah"):
        make_config("ucf", "quick", **{"generator.alpah": 1.0})
    with pytest.raises(KeyError, match="learning_rate"):
        make_config("ucf", "quick", learning_rate=0.1)
    data = to_dict(make_config())
    data["self_train"]["windw"] = 3
    with pytest.raises(KeyError, match="self_train.windw"):
        from_dict(data)
    with pytest.raises(ValueError, match="preset 'ucf-crime'"):
        make_config("ucf-crime")
    with pytest.raises(ValueError, match="variant 'fancy'"):
        make_config("ucf", "quick", "fancy")


@pytest.mark.parametrize("key,value,message", [
    ("self_train.ratio", 0.0, "ratio"), ("self_train.ratio", 1.5, "ratio"),
    ("self_train.window", 0, "window"), ("generator.num_heads", 0, "num_heads"),
    ("generator.dropout", 1.0, "dropout"), ("self_train.selection", "best", "selection"),
    ("crops", "max", "crops"), ("self_train.iterations", 0, "iterations"),
])
def test_bad_values_are_rejected(key, value, message):
    with pytest.raises(ValueError, match=message):
        make_config("ucf", "quick", **{key: value})


@pytest.mark.parametrize("variant", ["baseline", "completeness", "uncertainty", "full", "standard"])
def test_round_trip(variant):
    cfg = make_config("tad", "smoke", variant, **{"seed": 11, "generator.alpha": 0.5})
    assert from_dict(to_dict(cfg)) == cfg
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg  # as stored in a checkpoint or notebook
    assert isinstance(from_dict(json.loads(json.dumps(to_dict(cfg)))).generator.hidden, tuple)


def test_defaults_round_trip():
    assert from_dict(to_dict(RunConfig())) == RunConfig()
    assert from_dict({}) == RunConfig()


def test_book_rows_caps_the_claims_grids_only_at_smoke():
    from cupl.config import book_rows

    rows = tuple(range(10))
    assert book_rows("quick", "map_cells", rows) == rows and book_rows("full", "sensitivity", rows) == rows
    capped = book_rows("smoke", "map_cells", rows)
    assert 0 < len(capped) < len(rows) and capped == rows[:len(capped)]  # the first rows, never others
    assert book_rows("smoke", "other", rows) == rows
