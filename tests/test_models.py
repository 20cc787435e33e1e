"""The Inception-v3 family against the paper, TF-slim's endpoint table and torchvision's model."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import edgeinc
from edgeinc.models import (
    CheckpointError,
    InceptionOutputs,
    count_macs,
    count_parameters,
    create_model,
    get_variant,
    list_models,
    load_checkpoint,
    load_weights,
    save_weights,
)
from edgeinc.registry import UnknownNameError

VARIANTS = ["inception_v3", "inception_v3_151", "inception_v3_79"]

# (channels, side) of every endpoint at full width, batch 1 - like TF-slim's inception_v3_test.
STEM_299 = {
    "Conv2d_1a_3x3": (32, 149), "Conv2d_2a_3x3": (32, 147), "Conv2d_2b_3x3": (64, 147),
    "maxpool1": (64, 73), "Conv2d_3b_1x1": (80, 73), "Conv2d_4a_3x3": (192, 71), "maxpool2": (192, 35),
}
STEM_79 = {
    "Conv2d_1a_3x3": (32, 77), "Conv2d_2a_3x3": (32, 75), "Conv2d_2b_3x3": (64, 75),
    "maxpool1": (64, 75), "Conv2d_3b_1x1": (80, 75), "Conv2d_4a_3x3": (192, 73), "maxpool2": (192, 36),
}


def _blocks(g35: int) -> dict[str, tuple[int, int]]:
    return {
        "Mixed_5b": (256, g35), "Mixed_5c": (288, g35), "Mixed_5d": (288, g35),
        "Mixed_6a": (768, 17), "Mixed_6b": (768, 17), "Mixed_6c": (768, 17), "Mixed_6d": (768, 17),
        "Mixed_6e": (768, 17), "Mixed_7a": (1280, 8), "Mixed_7b": (2048, 8), "Mixed_7c": (2048, 8),
    }


ENDPOINTS = {
    "inception_v3": {**STEM_299, **_blocks(35)},
    "inception_v3_151": {**STEM_299, **_blocks(35)},  # stride-1 first conv on 151 reaches 299's grids
    "inception_v3_79": {**STEM_79, **_blocks(36)},
}


@pytest.mark.parametrize("name", VARIANTS)
def test_endpoint_shapes_at_full_width(name):
    model = create_model(name, num_classes=1000).eval()
    size = get_variant(name).input_size
    with torch.no_grad():
        ends = model.forward_endpoints(torch.randn(1, 3, size, size))
    for endpoint, (channels, side) in ENDPOINTS[name].items():
        assert tuple(ends[endpoint].shape) == (1, channels, side, side), endpoint
    assert tuple(ends["AuxLogits"].shape) == (1, 1000)
    assert tuple(ends["PreLogits"].shape) == (1, 2048)
    assert tuple(ends["Logits"].shape) == (1, 1000)
    # the metadata's grids are computed from the stem spec; they must agree with the real forward
    assert model.variant.grids == (ends["Mixed_5d"].shape[-1], ends["Mixed_6e"].shape[-1], ends["Mixed_7c"].shape[-1])


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_counts(name):
    released = create_model(name, aux_bn=False)  # torchvision-style aux head
    assert count_parameters(released, include_aux=False) == 23_834_568
    assert count_parameters(released) == 27_161_264
    bn_aux = create_model(name)  # default: BN-auxiliary (fc without bias, BatchNorm1d over 1000 logits)
    assert count_parameters(bn_aux) == 27_161_264 - 1000 + 2000


PAPER_GMACS = {"inception_v3": 5.71, "inception_v3_151": 5.71, "inception_v3_79": 5.36}


@pytest.mark.parametrize("name", VARIANTS)
def test_multiply_adds_match_paper_and_flop_counter(name):
    model = create_model(name).eval()
    size = get_variant(name).input_size
    macs = count_macs(model, size)
    assert macs / 1e9 == pytest.approx(PAPER_GMACS[name], rel=0.01)
    # independent recount: torch's FLOP counter counts 2 FLOPs per multiply-add of convs and matmuls
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    assert counter.get_total_flops() == 2 * macs
    # section 9: the three receptive fields cost about the same
    assert macs / count_macs(create_model("inception_v3").eval(), 299) == pytest.approx(1.0, abs=0.07)


def _with_realistic_bn_stats(model: nn.Module, size: int) -> nn.Module:
    """Random BN affine params and running stats estimated on data, so eval outputs are O(1)
    (a freshly initialised net in eval mode has logits ~1e12, TOOLCHAIN.md trap 9)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = 1 + 0.1 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
            m.momentum = None  # cumulative average over the calibration batch
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size, generator=g))
    return model.eval()


def _torchvision_variant(name: str) -> nn.Module:
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    if name != "inception_v3":  # the paper's stem changes, applied by hand
        tv.Conv2d_1a_3x3.conv.stride = (1, 1)
    if name == "inception_v3_79":
        tv.maxpool1 = nn.Identity()
    return tv


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_same_outputs_as_torchvision(name):
    size = get_variant(name).input_size
    tv = _with_realistic_bn_stats(_torchvision_variant(name), size)
    ours = create_model(name, aux_bn=False)
    ours.load_state_dict(tv.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert expected.abs().max() < 1e3  # the comparison is meaningful only on sane activations
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # training mode: the auxiliary head too (dropout off so that both see the same features)
    tv.train(), ours.train()
    tv.dropout.p = ours.dropout.p = 0.0
    with torch.no_grad():
        tv_out, our_out = tv(x), ours(x)
    assert isinstance(our_out, InceptionOutputs)
    torch.testing.assert_close(our_out.aux_logits, tv_out.aux_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(our_out.logits, tv_out.logits, rtol=1e-4, atol=1e-4)


def test_torchvision_and_timm_checkpoint_files_load_strictly(tmp_path):
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception_v3_google.pth"
    torch.save(tv.state_dict(), path)
    model = create_model("inception_v3", aux_bn=False, checkpoint_path=path)
    for key, value in tv.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    timm = pytest.importorskip("timm")
    tm = timm.create_model("inception_v3", pretrained=False, aux_logits=True)
    nested = tmp_path / "timm.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tm.state_dict().items()}, "epoch": 3}, nested)
    model = create_model("inception_v3", aux_bn=False, checkpoint_path=nested)
    assert torch.equal(model.fc.weight, tm.state_dict()["fc.weight"])


def test_checkpoint_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": Payload()}, f)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_checkpoint(create_model("inception_v3_79", depth_multiplier=0.1, num_classes=3), path)


def test_wrong_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_weights(create_model("inception_v3_79", depth_multiplier=0.1, num_classes=3), path)
    with pytest.raises(CheckpointError, match="other.safetensors.*does not fit"):
        load_checkpoint(create_model("inception_v3_79", depth_multiplier=0.1, num_classes=5), path)
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_checkpoint(create_model("inception_v3_79", depth_multiplier=0.1), tmp_path / "missing.pth")
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        load_checkpoint(create_model("inception_v3_79", depth_multiplier=0.1), bad)


def test_safetensors_round_trip(tmp_path):
    model = create_model("inception_v3_151", depth_multiplier=0.25, num_classes=7, stem="7x7")
    _with_realistic_bn_stats(model, 151)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, metadata={"note": "round trip"})
    loaded = load_weights(path).eval()
    assert loaded.variant.name == "inception_v3_151" and loaded.stem_spec.stem == "7x7"
    x = torch.randn(2, 3, 151, 151)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file


@pytest.mark.parametrize("multiplier,min_depth", [(0.5, 16), (0.25, 16), (0.1, 16), (0.1, 8)])
def test_depth_multiplier_widths(multiplier, min_depth):
    model = create_model("inception_v3_79", depth_multiplier=multiplier, min_depth=min_depth, num_classes=5)

    def depth(d):
        return max(int(d * multiplier), min_depth)

    assert model.Conv2d_1a_3x3.conv.out_channels == depth(32)
    assert model.Conv2d_4a_3x3.conv.out_channels == depth(192)
    assert model.Mixed_5b.out_channels == depth(64) + depth(64) + depth(96) + depth(32)
    assert model.Mixed_6e.branch7x7_2.conv.out_channels == depth(192)
    assert model.Mixed_7c.out_channels == depth(320) + 4 * depth(384) + depth(192)
    assert model.fc.in_features == model.num_features == model.Mixed_7c.out_channels
    with torch.no_grad():
        ends = model.eval().forward_endpoints(torch.randn(1, 3, 79, 79))
    assert ends["Mixed_7c"].shape == (1, model.num_features, 8, 8)
    assert count_parameters(model) < count_parameters(create_model("inception_v3_79", num_classes=5))


@pytest.mark.parametrize("name", ["inception_v3_79", "inception_v3_151"])
def test_training_forward_backward_with_aux_head(name):
    torch.manual_seed(0)
    model = create_model(name, depth_multiplier=0.1, num_classes=4).train()
    size = get_variant(name).input_size
    out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, InceptionOutputs)
    assert out.logits.shape == out.aux_logits.shape == (2, 4)
    target = torch.tensor([1, 3])
    loss = nn.functional.cross_entropy(out.logits, target) + 0.4 * nn.functional.cross_entropy(out.aux_logits, target)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["AuxLogits.fc.weight"].abs().sum() > 0 and grads["AuxLogits.fc_bn.weight"].abs().sum() > 0
    assert grads["Conv2d_1a_3x3.conv.weight"].abs().sum() > 0


@pytest.mark.parametrize("name", VARIANTS)
def test_every_accepted_input_size_works_including_aux_head(name):
    model = create_model(name, depth_multiplier=0.1, num_classes=3).train()
    smallest = model.min_input_size
    for size in (smallest, smallest + 1, 2 * smallest + 3):
        out = model(torch.randn(2, 3, size, size + 2))
        assert out.aux_logits.shape == (2, 3), size
    with pytest.raises(ValueError, match=f"smaller than {name} accepts: at least {smallest}x{smallest}"):
        model.eval()(torch.randn(1, 3, smallest - 1, smallest - 1))


def test_min_input_sizes():
    # torchvision documents 75x75 as Inception3's minimum; stride-1 stems accept smaller patches
    assert get_variant("inception_v3").min_input_size == 75
    assert get_variant("inception_v3_151").min_input_size == 39
    assert get_variant("inception_v3_79").min_input_size == 21


def test_table3_stem_ablation_7x7():
    model = create_model("inception_v3", stem="7x7", depth_multiplier=0.25, num_classes=3).eval()
    assert not hasattr(model, "Conv2d_1a_3x3") and model.Conv2d_1a_7x7.conv.kernel_size == (7, 7)
    assert model.Conv2d_1a_7x7.conv.out_channels == model.Conv2d_3b_1x1.conv.in_channels
    with torch.no_grad():
        ends = model.forward_endpoints(torch.randn(1, 3, 299, 299))
    assert ends["Conv2d_1a_7x7"].shape[-1] == 147  # the grid the factorized stack reaches
    assert model.variant.grids == (35, 17, 8) and ends["Mixed_7c"].shape[-1] == 8
    low = create_model("inception_v3_79", stem="7x7", depth_multiplier=0.25)
    assert low.variant.grids == get_variant("inception_v3_79").grids


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"depth_multiplier": 0}, "model option depth_multiplier: Input should be greater than 0"),
        ({"depth_multiplier": -1.0}, "model option depth_multiplier: Input should be greater than 0"),
        ({"depth_multiplier": float("nan")}, "model option depth_multiplier: Input should be a finite number"),
        ({"num_classes": 0}, "num_classes must be >= 1"),
        ({"stem": "5x5"}, "model option stem: Input should be 'factorized' or '7x7'"),
        ({"dropout": 1.5}, "model option dropout: Input should be less than 1"),
        ({"depth_multiplyer": 0.5}, r"model option depth_multiplyer: Extra inputs.*\(options: depth_multiplier,"),
    ],
)
def test_invalid_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("inception_v3_79", **kwargs)


def test_one_set_of_model_options_for_recipe_factory_model_and_weights(tmp_path):
    from edgeinc.config import ModelOptions, ModelSection
    from edgeinc.models import load_weights, save_weights

    assert create_model("inception_v3_79").options == ModelOptions()  # the model's defaults are the options'
    assert ModelSection(name="inception_v3_79").options == ModelOptions()  # and the recipe's
    assert ModelOptions().dropout == 0.2  # TF-slim's dropout_keep_prob 0.8, everywhere
    options = ModelOptions(depth_multiplier=0.1, min_depth=8, aux_bn=False, dropout=0.3, stem="7x7")
    model = create_model("inception_v3_151", num_classes=4, options=options)
    save_weights(model, tmp_path / "w.safetensors")
    again = load_weights(tmp_path / "w.safetensors")
    assert again.options == options and again.num_classes == 4 and again.variant.name == "inception_v3_151"


def test_unknown_model_suggests_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'inception_v3_79'"):
        create_model("inception_v3_78")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet50")


def test_registry_and_metadata():
    assert list_models() == VARIANTS
    assert edgeinc.list_models() == VARIANTS
    for name in VARIANTS:
        v = get_variant(name)
        assert v.crop_fraction == 0.875 and v.mean == (0.5,) * 3 and v.std == (0.5,) * 3
        assert create_model(name, depth_multiplier=0.1).variant.to_dict()["grids"] == list(v.grids)
    assert [get_variant(n).grids for n in VARIANTS] == [(35, 17, 8), (35, 17, 8), (36, 17, 8)]


def test_reset_classifier_and_heads():
    model = create_model("inception_v3_79", depth_multiplier=0.1, num_classes=5)
    model.reset_classifier(11)
    out = model.train()(torch.randn(2, 3, 79, 79))
    assert out.logits.shape == out.aux_logits.shape == (2, 11)
    model.eval()
    feats = model.forward_features(torch.randn(2, 3, 79, 79))
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.forward_head(feats).shape == (2, 11)
    assert [f["module"] for f in model.feature_info] == ["Mixed_5d", "Mixed_6e", "Mixed_7c"]
    no_aux = create_model("inception_v3_79", depth_multiplier=0.1, aux_logits=False).train()
    assert isinstance(no_aux(torch.randn(2, 3, 79, 79)), torch.Tensor)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)


def test_cli_models_json(capsys):
    from edgeinc.cli import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == VARIANTS
    assert all(r["params"] == 23_834_568 for r in rows)
    assert rows[2]["grids"] == [36, 17, 8]
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "23,834,568" in table and "5.36 G" in table
