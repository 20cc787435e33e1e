"""The recipe schema: errors name the file and the key path and suggest the closest key; inheritance;
--set overrides; the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeinc.config import Recipe, RecipeError, TrainSection, load_recipe, recipe_from_dict

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
ALL_RECIPES = sorted(RECIPES.rglob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "base.yaml", "model: {name: inception_v3_79}\ndata: {root: /data/x}\ntrain: {epochs: 3, lr: 0.1}\n")


def error_of(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(path, list(overrides))
    return str(e.value)


def test_unknown_key_names_file_key_path_and_suggests(tmp_path):
    p = write(tmp_path / "x.yaml", "model: {name: inception_v3}\ndata: {root: d}\ntrain: {bach_size: 64}\n")
    assert error_of(p) == f"{p}: train.bach_size: unknown key; did you mean 'batch_size'?"


def test_unknown_section_suggests_and_unrelated_key_lists_known(tmp_path):
    p = write(tmp_path / "x.yaml", "model: {name: inception_v3}\ndata: {root: d}\ntrian: {}\n")
    assert "trian: unknown key; did you mean 'train'?" in error_of(p)
    q = write(tmp_path / "y.yaml", "model: {name: inception_v3, zzz: 1}\ndata: {root: d}\n")
    msg = error_of(q)
    assert f"{q}: model.zzz: unknown key; known keys: depth_multiplier, min_depth, aux_logits" in msg
    assert "name, num_classes" in msg


def test_wrong_types_name_file_and_key(tmp_path):
    p = write(tmp_path / "x.yaml", "model: {name: inception_v3, aux_bn: maybe}\ndata: {root: d, scale: [0.5, 2]}\n"
                                   "train: {lr: fast, epochs: 2.5, optimizer: adam}\n")
    lines = error_of(p).splitlines()
    assert len(lines) == 5  # every error at once
    text = "\n".join(lines)
    assert f"{p}: train.lr: Input should be a valid number" in text and "(got 'fast')" in text
    assert f"{p}: train.epochs: Input should be a valid integer" in text
    assert f"{p}: train.optimizer: Input should be 'rmsprop_tf', 'momentum' or 'adamw'" in text
    assert f"{p}: model.aux_bn: Input should be a valid boolean" in text
    assert f"{p}: data.scale: must satisfy 0 < min <= max <= 1" in text


def test_missing_required_and_not_a_mapping(tmp_path):
    p = write(tmp_path / "x.yaml", "model: {depth_multiplier: 0.5}\n")
    msg = error_of(p)
    assert f"{p}: model.name: required key is missing" in msg and f"{p}: data: required key is missing" in msg
    assert "a recipe is a mapping" in error_of(write(tmp_path / "l.yaml", "- 1\n- 2\n"))
    assert "not valid YAML" in error_of(write(tmp_path / "bad.yaml", "model: {name: [\n"))
    assert "no such recipe file" in error_of(tmp_path / "missing.yaml")


def test_model_name_checked_against_registry(tmp_path):
    p = write(tmp_path / "x.yaml", "model: {name: inception_v3_97}\ndata: {root: d}\n")
    msg = error_of(p)
    assert msg.startswith(f"{p}: model.name: unknown model 'inception_v3_97'; did you mean 'inception_v3_79'")


def test_set_overrides_are_typed_and_errors_name_the_flag(base):
    r = load_recipe(base, ["train.lr=0.5", "model.aux_bn=false", "data.scale=[0.5, 1.0]", "model.num_classes=null"])
    assert r.train.lr == 0.5 and r.model.aux_bn is False and r.data.scale == (0.5, 1.0) and r.model.num_classes is None
    assert r.train.epochs == 3  # untouched keys keep the file's values
    expected = "--set train.bach_size=64: train.bach_size: unknown key; did you mean 'batch_size'?"
    assert error_of(base, ["train.bach_size=64"]) == expected
    assert "--set train.epochs=two: train.epochs: Input should be a valid integer" in error_of(base, ["train.epochs=two"])
    assert "expected section.key=value" in error_of(base, ["train.lr"])
    assert "train.lr is a value, not a section" in error_of(base, ["train.lr.x=1"])


def test_inheritance_merges_sections_and_errors_name_the_file_that_set_the_key(tmp_path, base):
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub" / "child.yaml", "base: ../base.yaml\nmodel: {depth_multiplier: 0.5}\ntrain: {lr: 0.2}\n")
    r = load_recipe(child)
    assert (r.model.name, r.model.depth_multiplier, r.train.lr, r.train.epochs) == ("inception_v3_79", 0.5, 0.2, 3)
    write(base, "model: {name: inception_v3_79}\ndata: {root: /data/x}\ntrain: {epoch: 3}\n")
    assert error_of(child) == f"{base}: train.epoch: unknown key; did you mean 'epochs'?"
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    assert "'base' chain loops" in error_of(tmp_path / "a.yaml")


def test_resolved_recipe_round_trips(base):
    r = load_recipe(base, ["train.seed=7"])
    again = recipe_from_dict(yaml.safe_load(r.to_yaml()))
    assert again == r
    assert isinstance(r, Recipe) and r.to_dict()["train"]["seed"] == 7


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_shipped_recipes_validate(path):
    load_recipe(path)


def test_paper_recipe_is_the_schema_default_and_variants_inherit_it():
    paper = load_recipe(RECIPES / "paper.yaml")
    assert paper.train == TrainSection()  # the defaults are the paper's method
    t = paper.train
    assert (t.lr, t.batch_size, t.lr_decay, t.lr_decay_epochs) == (0.045, 1600, 0.94, 2.0)
    assert (t.optimizer, t.rmsprop_decay, t.momentum, t.rmsprop_eps, t.grad_clip_norm) == ("rmsprop_tf", 0.9, 0.9, 1.0, 2.0)
    assert (t.label_smoothing, t.aux_weight, t.weight_decay, t.bn_momentum, t.ema_decay) == (0.1, 0.4, 4e-5, 0.0003, 0.9999)
    for name, model in (("lowres.yaml", "inception_v3_79"), ("mid151.yaml", "inception_v3_151")):
        r = load_recipe(RECIPES / name)
        assert r.model.name == model and r.train == paper.train and r.data == paper.data


def test_table3_chain_changes_one_switch_per_row_and_ends_at_the_paper():
    rows = sorted((RECIPES / "ablations").glob("*.yaml"))
    switches = [
        (r.train.optimizer, r.train.label_smoothing, r.model.stem, r.model.aux_bn)
        for r in map(load_recipe, rows)
    ]
    assert switches == [
        ("momentum", 0.0, "7x7", False),
        ("rmsprop_tf", 0.0, "7x7", False),
        ("rmsprop_tf", 0.1, "7x7", False),
        ("rmsprop_tf", 0.1, "factorized", False),
        ("rmsprop_tf", 0.1, "factorized", True),
    ]
    last, paper = load_recipe(rows[-1]).to_dict(), load_recipe(RECIPES / "paper.yaml").to_dict()
    last.pop("description"), paper.pop("description")
    assert last == paper
