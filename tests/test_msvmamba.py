"""MSVMamba: official-checkpoint conversion, the multi-scale mixer across backends, FLOPs by the official rule.

(Params, FLOPs at 224, forward/backward and the timm interface: tests/test_models.py, over every model.)
"""
import re
from pathlib import Path

import pytest
import timm
import torch

import ssm_kernels
from ssm_kernels import CROSS, MULTISCALE_LOW, ScanPaths, row_major, scan2d
from vmamba_zoo.models import convert_official_state_dict
from vmamba_zoo.models.msvmamba import TINY_KWARGS, MSVMamba
from vmamba_zoo.profiling import count_flops

KEYS = Path(__file__).parent / "data" / "msvmamba_tiny_keys.txt"


def official_state_dict():
    """Random tensors under every key (and shape) of the official MSVMamba-T state dict."""
    state = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = re.match(r"(\S+) \(([\d, ]*)\)", line).groups()
        state[key] = torch.randn(*[int(s) for s in shape.split(",") if s.strip()])
    return state


def test_official_keys_load_strictly_and_land_where_they_belong():
    official = official_state_dict()
    assert len(official) == 367 and sum(t.numel() for t in official.values()) == 33_046_312
    model = timm.create_model("msvmamba_tiny")
    converted = convert_official_state_dict({"model": official}, model)
    model.load_state_dict(converted, strict=True)
    ours = model.state_dict()
    pairs = {
        "patch_embed.0.weight": "stem.conv.weight",
        "patch_embed.2.bias": "stem.norm.bias",
        "layers.0.blocks.0.norm.weight": "stages.0.blocks.0.norm1.weight",
        "layers.2.blocks.8.op.x_proj_weight": "stages.2.blocks.8.mixer.x_proj_weight",
        "layers.1.blocks.1.op.dt_projs_weight": "stages.1.blocks.1.mixer.dt_proj_weight",
        "layers.1.blocks.1.op.dt_projs_bias": "stages.1.blocks.1.mixer.dt_bias",
        "layers.3.blocks.1.op.A_logs": "stages.3.blocks.1.mixer.A_log",
        "layers.3.blocks.0.op.Ds": "stages.3.blocks.0.mixer.D",
        "layers.0.blocks.0.op.conv2d.weight": "stages.0.blocks.0.mixer.conv.weight",
        "layers.0.blocks.0.op.conv2d_b1.bias": "stages.0.blocks.0.mixer.conv_low.bias",
        "layers.0.blocks.0.op.se.fc.2.weight": "stages.0.blocks.0.mixer.se.fc2.weight",
        "layers.2.blocks.3.op.out_norm.weight": "stages.2.blocks.3.mixer.out_norm.weight",
        "layers.2.blocks.3.convFFN.dwc.weight": "stages.2.blocks.3.mlp.dwconv.weight",
        "layers.2.blocks.3.norm2.bias": "stages.2.blocks.3.norm2.bias",
        "layers.0.downsample.reduction.weight": "stages.1.downsample.reduction.weight",
        "layers.2.downsample.norm.bias": "stages.3.downsample.norm.bias",
        "classifier.norm.weight": "norm_pre.weight",
        "classifier.head.bias": "head.fc.bias",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], official[theirs])
    # the FFN's 1x1 convs are our linear layers
    torch.testing.assert_close(ours["stages.1.blocks.0.mlp.fc1.weight"],
                               official["layers.1.blocks.0.convFFN.linear1.weight"].flatten(1))


def test_any_input_with_sides_divisible_by_4():
    """Odd maps at every stage (25x17 .. 4x3; half-resolution 13x9 .. 2x2), as the official code allows."""
    model = timm.create_model("msvmamba_nano", **TINY_KWARGS, num_classes=3).eval()
    _, feats = model.forward_intermediates(torch.randn(1, 3, 100, 68))
    assert [tuple(f.shape[2:]) for f in feats] == [(25, 17), (13, 9), (7, 5), (4, 3)]
    with pytest.raises(ValueError, match="divisible by 4, got 66x64"):
        model(torch.randn(1, 3, 66, 64))


def test_msvmamba_matches_across_backends():
    """The whole model (both branches, odd half-resolution maps) on the fused Triton scan against the
    reference, outputs and every parameter's gradient."""
    model = MSVMamba(**TINY_KWARGS, num_classes=5)
    x = torch.randn(1, 3, 64, 32)   # stage maps 16x8 .. 2x1; half-resolution maps 8x4 .. 1x1
    outputs, grads = {}, {}
    for backend in ("reference", "triton"):
        model.zero_grad()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SSM_KERNELS_BACKEND", backend)
            outputs[backend] = model(x)
            outputs[backend].square().sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    assert rel(outputs["triton"], outputs["reference"]) < 1e-5
    for name, g in grads["reference"].items():
        assert rel(grads["triton"][name], g) < 1e-4, name


@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
def test_flops_by_the_official_rule_do_not_depend_on_the_backend(monkeypatch):
    """Reference (unfused scans, einsums) and Triton (one fused node a branch) count the same."""
    model = MSVMamba(**TINY_KWARGS)
    counts = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        counts[backend] = count_flops(model, (3, 32, 64))
    assert counts["triton"] == counts["reference"]


def test_repeated_visits_are_refused_where_undefined():
    x = dict(u=torch.randn(1, 3, 4, 8), delta=torch.randn(1, 3, 4, 2, 8), A=-torch.rand(16, 1),
             B=torch.randn(1, 3, 4, 2, 1), C=torch.randn(1, 3, 4, 2, 1), D=None, delta_bias=None)
    row = row_major(3, 4)
    twice = ScanPaths.from_orders([torch.cat([row, row]), torch.cat([row, row.flip(0)])], 3, 4)
    with pytest.raises(ValueError, match="needs one direction"):
        scan2d(**x, paths=twice, out_norm=torch.nn.LayerNorm(8))
    split = ScanPaths.from_orders([torch.cat([row, row]), torch.cat([row, row])], 3, 4, split_channels=True)
    with pytest.raises(ValueError, match="cannot split the channels"):
        scan2d(**dict(x, delta=torch.randn(1, 3, 4, 2, 4)), paths=split)
    assert MULTISCALE_LOW(3, 4).repeats == 3 and CROSS(3, 4).repeats == 1


@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
@pytest.mark.parametrize("norm", [True, False])
def test_repeated_visit_custom_ops_pass_opcheck(norm):
    """Schemas and fake (meta) kernels of the fused scan's custom ops on a path with repeated visits."""
    from ssm_kernels.triton import ops as tops

    H, W, E, R = 3, 2, 5, 3
    u, low = torch.randn(1, H, W, E), torch.randn(1, H, W, 1, R + 2)
    nw, nb = (torch.rand(E) + 0.5, torch.randn(E)) if norm else (None, None)
    args = (u, low[..., :R], -torch.rand(E, 1) - 0.1, low[..., R:R + 1], low[..., R + 1:], torch.randn(E),
            torch.randn(E), MULTISCALE_LOW(H, W).index, torch.randn(1, E, R), nw, nb, 1e-5)
    torch.library.opcheck(tops.scan2d_fwd, (*args, True, False, True))
    out, ckpt, slices, stats = tops.scan2d_fwd(*args, True, False, True)
    torch.library.opcheck(tops.scan2d_bwd, (*args[:10], ckpt, slices, stats, torch.randn_like(out), True, False, True))
