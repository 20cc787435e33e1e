"""The contracts between packages: who imports whom, the registries, shipped recipes, the run directory."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeinc.config import RECIPES_DIR, RecipeError, find_recipe, shipped_recipes
from edgeinc.registry import Registry, UnknownNameError
from edgeinc.rundir import RunDir, is_model_source


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_runtime_and_the_artifact_contract_never_import_export():
    loaded = _modules_after("import edgeinc.runtime, edgeinc.artifact, edgeinc.scoring")
    assert not {m for m in loaded if m.startswith("edgeinc.export")}, "runtime must not depend on export"


def test_the_command_line_starts_without_pytorch_and_offers_the_registries():
    loaded = _modules_after("import edgeinc.cli")
    assert "torch" not in loaded and "onnx" not in loaded and "tensorflow" not in loaded
    from edgeinc.cli import build_parser

    export = build_parser()._subparsers._group_actions[0].choices["export"]
    target = next(a for a in export._actions if a.dest == "target")
    precision = next(a for a in export._actions if a.dest == "precision")
    assert target.choices == ["onnx", "tflite", "tensorrt", "executorch"] and set(precision.choices) == {"fp32", "fp16", "int8"}
    assert subprocess.run([sys.executable, "-m", "edgeinc", "--version"], capture_output=True, text=True).stdout.startswith("edgeinc ")


def test_lazy_registry_entries_load_their_module_on_first_use():
    reg: Registry = Registry("thing")
    reg.register_lazy("dumps", "json:dumps", meta="a JSON writer")
    assert reg.meta("dumps") == "a JSON writer" and reg.names() == ["dumps"]
    assert reg.get("dumps")({"a": 1}) == '{"a": 1}'
    with pytest.raises(ValueError, match="registered twice"):
        reg.register_lazy("dumps", "json:dumps")
    with pytest.raises(UnknownNameError, match="did you mean 'dumps'"):
        reg.get("dump")


def test_recipes_ship_inside_the_package_and_are_found_by_name(tmp_path):
    names = shipped_recipes()
    assert {"paper", "lowres", "mid151", "quickstart", "ablations/2_rmsprop"} <= set(names)
    assert find_recipe("lowres") == RECIPES_DIR / "lowres.yaml" and RECIPES_DIR.parent.name == "edgeinc"
    own = tmp_path / "mine.yaml"
    own.write_text("model: {name: inception_v3_79}\ndata: {root: x}\n")
    assert find_recipe(own) == own  # a path is a path
    with pytest.raises(RecipeError, match="did you mean 'lowres'"):
        find_recipe("lowrez")


def test_one_run_directory_contract(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.holds_a_run() and not is_model_source(run.path)
    run.path.mkdir()
    run.recipe.write_text("x")
    assert run.holds_a_run() and not run.has_weights() and not is_model_source(run.path)
    run.weights("model").write_bytes(b"")
    assert run.find_weights("ema") == run.weights("model") and is_model_source(run.path)
    assert run.checkpoint.relative_to(run.path).as_posix() == "checkpoints/last.pt"
    assert not is_model_source(tmp_path / "weights.pt")  # a foreign torch file is not an edgeinc source


def test_tied_logits_score_alike_on_every_cpu():
    """Top-k breaks ties to the lower class index, as argmax does: numpy's default sort ordered the tied INT8
    logits of one .pte differently on AVX-512 and on Arm (top-1 40.00% vs 39.67% on identical logits)."""
    from edgeinc.scoring import accuracy, top_k

    logits = np.random.default_rng(0).integers(0, 4, size=(2000, 6)).astype(np.float32)  # a coarse grid: many ties
    labels = logits.argmax(1)
    assert (top_k(logits, 5)[:, 0] == labels).all()
    assert accuracy(logits, labels).top1 == 100.0
    spec = importlib.util.spec_from_file_location("device_bench", Path(__file__).parents[1] / "deploy" / "edgeinc_device_bench.py")
    device_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_bench)
    assert device_bench.accuracy(logits, labels.tolist())["top1"] == 100.0
