"""EfficientVMamba: the atrous mixer against the official equations written out, the converter on the
official key list, the family's FLOPs rule, and the fused path against the reference."""
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import ssm_kernels
from ssm_kernels.reference import selective_scan_naive
from vmamba_zoo.layers import AtrousSS2D
from vmamba_zoo.models import CheckpointMismatchError, convert_official_state_dict
from vmamba_zoo.models.efficient_vmamba import CARD, TINY_KWARGS, EfficientVMamba
from vmamba_zoo.profiling import count_flops
from vmamba_zoo.profiling.flops import flop_analysis

KEYS = Path(__file__).parent / "data" / "efficientvmamba_tiny_keys.txt"


def es2d_explicit(m: AtrousSS2D, x):
    """ES2D as the official code computes it: pad to even, gather each sub-grid, project its tokens with its
    own weights, scan, write back, crop, norm, gate."""
    E, R, N = m.d_inner, m.dt_rank, m.d_state
    xs, z = m.in_proj(x).chunk(2, dim=-1)
    xs = F.silu(m.conv(xs.permute(0, 3, 1, 2)))                             # (b, E, H, W)
    height, width = xs.shape[2:]
    xs = F.pad(xs, (0, width % 2, 0, height % 2))
    grids = [xs[:, :, 0::2, 0::2], xs[:, :, 1::2, 0::2].transpose(2, 3),
             xs[:, :, 0::2, 1::2], xs[:, :, 1::2, 1::2].transpose(2, 3)]
    weight = m.x_proj.weight.view(4, R + 2 * N, E)
    y = torch.zeros_like(xs)
    outs = []
    for k, grid in enumerate(grids):
        u = grid.flatten(2)                                                   # (b, E, L')
        dt, B, C = torch.einsum("bel,ce->bcl", u, weight[k]).split([R, N, N], dim=1)
        delta = torch.einsum("brl,er->bel", dt, m.dt_proj_weight[k])
        ch = slice(k * E, (k + 1) * E)
        outs.append(selective_scan_naive(u, delta, -m.A_log[ch].exp(), B, C, m.D[ch], None, m.dt_bias[k],
                                         delta_softplus=True).view_as(grid))
    y[:, :, 0::2, 0::2], y[:, :, 1::2, 0::2] = outs[0], outs[1].transpose(2, 3)
    y[:, :, 0::2, 1::2], y[:, :, 1::2, 1::2] = outs[2], outs[3].transpose(2, 3)
    y = m.out_norm(y[:, :, :height, :width].permute(0, 2, 3, 1))
    return m.out_proj(y * F.silu(z))


@pytest.mark.parametrize("height,width", [(6, 4), (7, 5), (1, 3)])
def test_atrous_mixer_matches_the_official_equations(height, width):
    torch.manual_seed(0)
    m = AtrousSS2D(8, d_state=4)
    with torch.no_grad():
        m.A_log.add_(0.3 * torch.randn_like(m.A_log))
        m.x_proj.weight.mul_(10)
    x = torch.randn(2, height, width, 8)
    torch.testing.assert_close(m(x), es2d_explicit(m, x), rtol=1e-4, atol=1e-5)


def official_state_dict():
    """Random tensors under every key (and shape) of the official EfficientVMamba-T state dict."""
    state = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = re.match(r"(\S+) \(([\d, ]*)\)", line).groups()
        state[key] = torch.randn(tuple(int(s) for s in shape.split(",") if s.strip()))
    return state


def test_official_keys_load_strictly_and_land_where_they_belong():
    official = official_state_dict()
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert len(official) == 261
    assert sum(t.numel() for k, t in official.items() if not k.endswith(buffers)) == 6_493_660
    model = timm.create_model("efficientvmamba_tiny")
    model.load_state_dict(convert_official_state_dict({"model": official}, model), strict=True)
    ours = model.state_dict()
    pairs = {
        "patch_embed.0.weight": "stem.conv.weight",
        "patch_embed.2.bias": "stem.norm.bias",
        "layers.0.blocks.1.op.in_proj.weight": "stages.0.blocks.1.mixer.in_proj.weight",
        "layers.0.blocks.1.op.conv2d.bias": "stages.0.blocks.1.mixer.conv.bias",
        "layers.1.blocks.0.op.A_logs": "stages.1.blocks.0.mixer.A_log",
        "layers.1.blocks.0.op.Ds": "stages.1.blocks.0.mixer.D",
        "layers.1.blocks.1.op.dt_projs_weight": "stages.1.blocks.1.mixer.dt_proj_weight",
        "layers.1.blocks.1.op.dt_projs_bias": "stages.1.blocks.1.mixer.dt_bias",
        "layers.0.blocks.0.conv_branch.1.running_var": "stages.0.blocks.0.conv_branch.1.running_var",
        "layers.0.blocks.0.se.channel_select.weight": "stages.0.blocks.0.bi_attn.channel_select.weight",
        "layers.0.downsample.reduction.weight": "stages.1.downsample.reduction.weight",
        "layers.1.downsample.norm.bias": "stages.2.downsample.norm.bias",
        "layers.2.6.reduction.weight": "stages.3.downsample.reduction.weight",
        "layers.2.1.conv_pw.0.weight": "stages.2.blocks.0.conv_pw.weight",
        "layers.2.4.conv_pw.1.running_mean": "stages.2.blocks.3.bn1.running_mean",
        "layers.3.2.conv_dw.1.weight": "stages.3.blocks.1.bn2.weight",
        "layers.3.1.se.conv_reduce.bias": "stages.3.blocks.0.se.conv_reduce.bias",
        "layers.2.2.conv_pw2.0.weight": "stages.2.blocks.1.conv_pwl.weight",
        "layers.2.2.conv_pw2.1.bias": "stages.2.blocks.1.bn3.bias",
        "classifier.norm.weight": "norm_pre.weight",
        "classifier.head.weight": "head.fc.weight",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], official[theirs])
    # x_proj_weight (K, R + 2N, E) is our x_proj.weight (K * (R + 2N), E), direction-major
    torch.testing.assert_close(ours["stages.0.blocks.0.mixer.x_proj.weight"].view(4, 35, 96),
                               official["layers.0.blocks.0.op.x_proj_weight"])


def test_mismatched_keys_are_all_listed():
    official = official_state_dict()
    del official["layers.2.3.se.conv_expand.bias"]
    official["layers.0.blocks.0.op.x_proj_weight"] = torch.zeros(4, 36, 96)
    with pytest.raises(CheckpointMismatchError) as info:
        convert_official_state_dict(official, timm.create_model("efficientvmamba_tiny"))
    message = str(info.value)
    assert "stages.2.blocks.2.se.conv_expand.bias" in message and "missing keys" in message
    assert "stages.0.blocks.0.mixer.x_proj.weight: checkpoint (4, 36, 96) vs model (140, 96)" in message
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        convert_official_state_dict(official_state_dict(), timm.create_model("efficientvmamba_small"))


def test_timm_pretrained_from_an_official_file(tmp_path):
    official = official_state_dict()
    path = tmp_path / "efficient_vmamba_tiny.ckpt"
    torch.save({"model": official, "epoch": 299}, path)
    overlay = dict(file=str(path), custom_load=True)
    model = timm.create_model("efficientvmamba_tiny", pretrained=True, pretrained_cfg_overlay=overlay)
    torch.testing.assert_close(model.head.fc.weight, official["classifier.head.weight"])
    features = timm.create_model("efficientvmamba_tiny", pretrained=True, features_only=True, out_indices=(1, 2),
                                 pretrained_cfg_overlay=overlay)
    torch.testing.assert_close(features.model.stages[1].blocks[1].mixer.D, official["layers.1.blocks.1.op.Ds"])


def test_flops_rule_counts_the_pools_but_not_the_channel_attention_mean():
    """The official fvcore count takes average pooling as 1 per element (the head, the inverted residuals'
    squeeze-excite) but leaves the mean inside BiAttn (an aten::mean) uncounted."""
    model = EfficientVMamba(**TINY_KWARGS)  # 64x64 input: maps 16, 8, 4, 2; channels 8, 16, 32, 64
    by_op = flop_analysis(model, input_size=(3, 64, 64)).by_operator()
    head, squeeze_excite = 2 * 2 * 64, 4 * 4 * (4 * 32) + 2 * 2 * (4 * 64)
    assert by_op["mean"] == head + squeeze_excite
    assert any("official repository's vssm_efficient_small.yaml" in note for note in CARD["notes"])


def test_gflops_do_not_depend_on_the_backend(monkeypatch):
    """The fused node counts its in-kernel dt projection as the official einsum does (fvcore's estimate)."""
    model = EfficientVMamba(**TINY_KWARGS)
    counts = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        counts[backend] = count_flops(model, (3, 64, 64))
    assert counts["triton"] == counts["reference"]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
def test_model_matches_across_backends_on_odd_maps():
    """The fused path end to end, forward and backward, on maps that need padding (9x7, then 5x4); in eval
    mode, where the gradients of the conv biases before batch norm are not zero up to rounding."""
    model = EfficientVMamba(**TINY_KWARGS, num_classes=5).eval()
    x = torch.randn(1, 3, 36, 28)
    outputs, grads = {}, {}
    for backend in ("reference", "triton"):
        model.zero_grad()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SSM_KERNELS_BACKEND", backend)
            outputs[backend] = model(x)
            outputs[backend].square().sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert rel(outputs["triton"], outputs["reference"]) < 1e-5
    for name, g in grads["reference"].items():
        assert rel(grads["triton"][name], g) < 1e-4, name
