"""Spatial-Mamba's own pieces: the structure-aware state fusion, the mixer on both backends, the converter."""
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import ssm_kernels
import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo.layers import StateFusion
from vmamba_zoo.models import CheckpointMismatchError, convert_official_state_dict
from vmamba_zoo.models.spatial_mamba import TINY_KWARGS, StructureAwareSSM

KEYS = Path(__file__).parent / "data" / "spatialmamba_tiny_keys.txt"


def random_fusion(dim):
    fusion = StateFusion(dim)
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(torch.randn_like(p))
    return fusion


def merged_11x11(fusion):
    """The official eval form: alpha_i * kernel_i placed at their dilated taps of one 11x11 kernel."""
    merged = torch.zeros(fusion.dim, 1, 11, 11, dtype=torch.float64)
    for alpha, weight, d in zip(fusion.alpha, fusion.weight, (1, 3, 5)):
        for i in range(3):
            for j in range(3):
                merged[:, 0, 5 + (i - 1) * d, 5 + (j - 1) * d] += (alpha * weight[:, 0, i, j]).double()
    return merged


@pytest.mark.parametrize("size", [(7, 7), (3, 5), (12, 9), (1, 4)])
def test_state_fusion_equals_the_merged_11x11_kernel_and_the_separate_convs(size):
    fusion = random_fusion(6)
    h = torch.randn(2, 6, *size)
    out = fusion(h)
    merged = F.conv2d(F.pad(h.double(), (5, 5, 5, 5), mode="replicate"), merged_11x11(fusion), groups=6)
    torch.testing.assert_close(out.double(), merged, rtol=1e-5, atol=1e-5)
    separate = sum(a * F.conv2d(F.pad(h, (d,) * 4, mode="replicate"), w, dilation=d, groups=6)
                   for a, w, d in zip(fusion.alpha, fusion.weight, (1, 3, 5)))
    torch.testing.assert_close(out, separate, rtol=1e-5, atol=1e-5)


def test_state_fusion_follows_its_parameters():
    """No cached merged kernel: a change of weights (a checkpoint loaded after an eval call) takes effect."""
    fusion = random_fusion(3).eval()
    h = torch.randn(1, 3, 5, 5)
    before = fusion(h)
    with torch.no_grad():
        fusion.alpha.mul_(2)
    torch.testing.assert_close(fusion(h), 2 * before)


def test_mixer_needs_one_state():
    with pytest.raises(ValueError, match="d_state must be 1"):
        StructureAwareSSM(16, d_state=4)


@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
@pytest.mark.parametrize("fused_observe", [False, True])
def test_mixer_matches_across_backends(monkeypatch, fused_observe):
    torch.manual_seed(0)
    mixer = StructureAwareSSM(8, fused_observe=fused_observe)
    with torch.no_grad():
        for p in mixer.state_fusion.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(2, 5, 7, 8)
    results = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        mixer.zero_grad()
        xb = x.clone().requires_grad_()
        y = mixer(xb)
        y.square().sum().backward()
        results[backend] = (y, xb.grad, {n: p.grad.clone() for n, p in mixer.named_parameters()})
    (y0, g0, p0), (y1, g1, p1) = results["reference"], results["triton"]
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-5)
    for name in p0:
        torch.testing.assert_close(p1[name], p0[name], rtol=1e-4, atol=1e-4, msg=name)


def test_fused_observe_is_the_same_mixer():
    """The one-op fusion + observation computes what state_fusion and the observation compute, with the same
    parameters, forward and backward (reference backend)."""
    torch.manual_seed(0)
    separate, fused = StructureAwareSSM(8), StructureAwareSSM(8, fused_observe=True)
    with torch.no_grad():
        for p in separate.state_fusion.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    fused.load_state_dict(separate.state_dict())
    x = torch.randn(2, 5, 7, 8, requires_grad=True)
    y0, y1 = separate(x), fused(x)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    g0, g1 = (torch.autograd.grad(y.square().sum(), [x, *m.parameters()]) for y, m in ((y0, separate), (y1, fused)))
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    model = timm.create_model("spatialmamba_tiny", fused_observe=True, **TINY_KWARGS)
    assert model.stages[0].blocks[0].mixer.fused_observe


def official_state_dict():
    """Random tensors under every key (and shape) of the official Spatial-Mamba-T state dict."""
    state = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = re.match(r"(\S+) \(([\d, ]*)\)", line).groups()
        size = tuple(int(s) for s in shape.split(",") if s.strip())
        state[key] = torch.tensor(7) if key.endswith("num_batches_tracked") else torch.randn(size)
    return state


def test_official_keys_load_strictly_and_land_where_they_belong():
    official = official_state_dict()
    assert len(official) == 553
    assert sum(t.numel() for k, t in official.items() if "running_" not in k and "num_batches" not in k) == 26_748_862
    model = timm.create_model("spatialmamba_tiny")
    model.load_state_dict(convert_official_state_dict(official, model), strict=True)
    ours = model.state_dict()
    pairs = {
        "patch_embed.conv1.conv.weight": "stem.conv1.0.weight",
        "patch_embed.conv2.1.norm.running_var": "stem.residual.1.1.running_var",
        "patch_embed.conv3.0.norm.bias": "stem.conv2.1.bias",
        "patch_embed.conv3.1.conv.weight": "stem.proj.0.weight",
        "layers.0.downsample.conv.0.conv.weight": "stages.1.downsample.expand.weight",
        "layers.1.downsample.conv.1.conv.bias": "stages.2.downsample.dwconv.bias",
        "layers.2.downsample.conv.2.conv.weight": "stages.3.downsample.proj.weight",
        "layers.2.downsample.conv.2.norm.running_mean": "stages.3.downsample.norm.running_mean",
        "layers.0.blocks.1.cpe1.weight": "stages.0.blocks.1.cpe1.proj.weight",
        "layers.3.blocks.3.cpe2.bias": "stages.3.blocks.3.cpe2.proj.bias",
        "layers.1.blocks.2.ln_1.weight": "stages.1.blocks.2.norm1.weight",
        "layers.1.blocks.2.ln_2.bias": "stages.1.blocks.2.norm2.bias",
        "layers.2.blocks.7.self_attention.x_proj_weight": "stages.2.blocks.7.mixer.x_proj_weight",
        "layers.2.blocks.7.self_attention.dt_projs_weight": "stages.2.blocks.7.mixer.dt_proj_weight",
        "layers.2.blocks.7.self_attention.dt_projs_bias": "stages.2.blocks.7.mixer.dt_bias",
        "layers.0.blocks.0.self_attention.A_logs": "stages.0.blocks.0.mixer.A_log",
        "layers.0.blocks.0.self_attention.Ds": "stages.0.blocks.0.mixer.D",
        "layers.0.blocks.0.self_attention.conv2d.weight": "stages.0.blocks.0.mixer.conv.weight",
        "layers.0.blocks.0.self_attention.state_fusion.kernel_3": "stages.0.blocks.0.mixer.state_fusion.weight.0",
        "layers.0.blocks.0.self_attention.state_fusion.kernel_3_1": "stages.0.blocks.0.mixer.state_fusion.weight.1",
        "layers.0.blocks.0.self_attention.state_fusion.kernel_3_2": "stages.0.blocks.0.mixer.state_fusion.weight.2",
        "layers.0.blocks.0.self_attention.state_fusion.alpha": "stages.0.blocks.0.mixer.state_fusion.alpha",
        "layers.3.blocks.0.self_attention.out_norm.weight": "stages.3.blocks.0.mixer.out_norm.weight",
        "layers.3.blocks.0.self_attention.out_proj.weight": "stages.3.blocks.0.mixer.out_proj.weight",
        "layers.3.blocks.0.mlp.fc1.weight": "stages.3.blocks.0.mlp.fc1.weight",
        "norm.weight": "norm_pre.weight",
        "head.bias": "head.fc.bias",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], official[theirs])


def test_missing_and_unexpected_official_keys_are_listed():
    official = official_state_dict()
    del official["layers.1.blocks.0.self_attention.state_fusion.alpha"]
    official["layers.0.blocks.0.self_attention.state_fusion._merge_weight"] = torch.zeros(128, 1, 11, 11)
    with pytest.raises(CheckpointMismatchError) as err:
        convert_official_state_dict(official, timm.create_model("spatialmamba_tiny"))
    assert err.value.missing == ["stages.1.blocks.0.mixer.state_fusion.alpha"]
    assert err.value.unexpected == ["stages.0.blocks.0.mixer.state_fusion._merge_weight"]


@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
def test_flops_count_the_state_scan_on_either_backend(monkeypatch):
    from vmamba_zoo.models.spatial_mamba import TINY_KWARGS
    from vmamba_zoo.profiling import count_flops, flop_analysis

    model = timm.create_model("spatialmamba_tiny", **TINY_KWARGS)
    counts = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        counts[backend] = count_flops(model, (3, 64, 64))
    assert counts["triton"] == counts["reference"]
    by_op = flop_analysis(model.eval(), input_size=(3, 64, 64)).by_operator()
    # 7 * L * E * N per block: E = 2 * dim, maps 16x16, 8x8, 4x4, 2x2
    assert by_op["PythonOp.SelectiveScanStatesFn"] == sum(7 * s * s * 2 * d for s, d in
                                                          zip((16, 8, 4, 2), TINY_KWARGS["dims"]))
    # the fusion node: the three 3x3 depthwise convolutions, 27 multiply-adds per state
    assert by_op["PythonOp.StateFusionFn"] == sum(27 * s * s * 2 * d for s, d in
                                                         zip((16, 8, 4, 2), TINY_KWARGS["dims"]))


def test_state_fusion_kernels_kept_only_while_current():
    """Without autograd the stacked fusion kernels are reused, and made anew after an in-place update, a load or
    a cast (never a stale cache, unlike the official eval path's merged kernel)."""
    from vmamba_zoo.layers import StateFusion
    m = StateFusion(4)
    with torch.no_grad():
        first = m.kernels()
        assert m.kernels() is first
        m.weight[1].mul_(2)
        assert torch.equal(m.kernels()[1], torch.full((4, 3, 3), 2.0))
        m.load_state_dict({k: 3 * v for k, v in m.state_dict().items()})
        assert torch.equal(m.kernels()[0], torch.full((4, 3, 3), 3.0))
        assert m.double().kernels().dtype == torch.float64
    assert m.kernels().requires_grad  # with autograd: stacked each call, in the graph
