"""GroupMamba: the per-group scan paths, the batched group mixer against four separate one-direction
SS2Ds written out, the fused split-channel scan on the Triton kernels, the class-token head with its
distillation classifier, the hard-distillation objective, and official-checkpoint conversion."""
import math
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import vmamba_zoo  # noqa: F401  (registers the models)
from ssm_kernels import CROSS_SPLIT, cross_merge, cross_scan
from ssm_kernels.reference import selective_scan_naive
from vmamba_zoo.models import CheckpointMismatchError, convert_official_state_dict, tiny_kwargs
from vmamba_zoo.models.group_mamba import GroupedSS2D, GroupMamba
from vmamba_zoo.profiling import count_flops
from vmamba_zoo.training import HardDistillationLoss, hard_distillation_loss

KEYS = Path(__file__).parent / "data" / "groupmamba_tiny_keys.txt"


def official_orders(height, width):
    """The official CrossScan_1..4: row-major, column-major, row-major reversed, column-major reversed."""
    row = [(h, w) for h in range(height) for w in range(width)]
    col = [(h, w) for w in range(width) for h in range(height)]
    return [row, col, row[::-1], col[::-1]]


@pytest.mark.parametrize("height,width", [(3, 5), (1, 1), (4, 2)])
def test_split_cross_scans_group_k_in_direction_k_and_merges_by_concatenation(height, width):
    x = torch.randn(2, height, width, 12)
    paths = CROSS_SPLIT(height, width)
    seq = cross_scan(x, paths)
    assert seq.shape == (2, 4, 3, height * width)
    for k, order in enumerate(official_orders(height, width)):
        group = x[..., 3 * k:3 * (k + 1)]
        torch.testing.assert_close(seq[:, k], torch.stack([group[:, h, w] for h, w in order], dim=-1))
    torch.testing.assert_close(cross_merge(seq, paths), x)


def explicit_grouped_ss2d(m: GroupedSS2D, x):
    """The official layer's four VSSS, one after another, each a one-direction SS2D of its own weights."""
    batch, height, width, dim = x.shape
    G, R, N = m.groups, m.dt_rank, m.d_state
    E = dim // G
    outs = []
    for k, order in enumerate(official_orders(height, width)):
        sl = slice(k * E, (k + 1) * E)
        xz = x[..., sl] @ m.in_proj.weight[k].t()
        xk, z = xz[..., :E], F.silu(xz[..., E:])
        xk = F.conv2d(xk.permute(0, 3, 1, 2), m.conv.weight[sl], m.conv.bias[sl], padding=1, groups=E)
        xk = F.silu(xk).permute(0, 2, 3, 1)
        seq = torch.stack([xk[:, h, w] for h, w in order], dim=-1)                     # (b, E, L)
        dbl = torch.einsum("bel,ce->bcl", seq, m.x_proj_weight[k])
        dt, B, C = dbl.split([R, N, N], dim=1)
        delta = torch.einsum("brl,er->bel", dt, m.dt_proj_weight[k])
        y = selective_scan_naive(seq, delta, -m.A_log[sl].exp(), B, C, m.D[sl], None, m.dt_bias[k], True)
        ymap = torch.zeros_like(xk)
        for t, (h, w) in enumerate(order):
            ymap[:, h, w] = y[..., t]
        ymap = F.layer_norm(ymap, (E,), m.out_norm.weight[sl], m.out_norm.bias[sl], m.out_norm.eps)
        outs.append((ymap * z) @ m.out_proj.weight[k].t())
    return torch.cat(outs, dim=-1)


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)


def test_grouped_ss2d_is_four_separate_one_direction_ss2ds():
    m = GroupedSS2D(32, d_state=2)   # E = 8, rank 1, two states
    randomise(m)
    x = torch.randn(2, 3, 5, 32)
    torch.testing.assert_close(m(x), explicit_grouped_ss2d(m, x), rtol=1e-4, atol=1e-5)


def test_fused_split_channel_scan_on_triton_matches_reference(monkeypatch):
    """The layer's one scan2d launch over the four channel groups, forward and every gradient."""
    m = GroupedSS2D(16)
    randomise(m)
    x = torch.randn(2, 3, 5, 16, requires_grad=True)
    results = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        m.zero_grad()
        x.grad = None
        y = m(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results[backend] = [y] + [x.grad] + [p.grad.clone() for p in m.parameters()]
    for ref, tri in zip(results["reference"], results["triton"]):
        torch.testing.assert_close(tri, ref, rtol=1e-4, atol=1e-5)


def test_flops_do_not_depend_on_the_backend(monkeypatch):
    model = GroupMamba(**tiny_kwargs("groupmamba_tiny"))
    counts = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        counts[backend] = count_flops(model, (3, 32, 32))
    assert counts["triton"] == counts["reference"]


def test_head_distillation_and_classifier_api():
    model = timm.create_model("groupmamba_tiny", num_classes=5, **tiny_kwargs("groupmamba_tiny"))
    x = torch.randn(2, 3, 32, 48)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model(x)
    assert feats.shape == (2, 1, 2, 32) and pre.shape == (2, 32)
    torch.testing.assert_close(logits, (model.head.fc(pre) + model.head.fc_dist(pre)) / 2)
    model.train()
    assert model(x).shape == (2, 5)                 # timm's convention: the mean unless distilled training
    model.set_distilled_training(True)
    cls, dist = model(x)
    assert cls.shape == dist.shape == (2, 5)
    model.eval()
    assert model(x).shape == (2, 5)                 # inference: always the mean
    model.reset_classifier(3)
    assert [fc.out_features for fc in model.get_classifier()] == [3, 3]
    model.reset_classifier(0)
    assert model(x).shape == (2, 32)
    with pytest.raises(ValueError, match="global_pool must be 'avg'"):
        model.reset_classifier(3, "max")


def test_any_input_size_and_intermediates():
    model = timm.create_model("groupmamba_tiny", **tiny_kwargs("groupmamba_tiny")).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 50)).shape == (1, 1000)
        final, feats = model.forward_intermediates(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 16, 24), (1, 32, 8, 12), (1, 32, 4, 6), (1, 32, 2, 3)]
    torch.testing.assert_close(final, feats[-1].permute(0, 2, 3, 1))
    # as dense prediction prunes it (VisualSSMBackbone): the class-token head goes entirely
    assert model.prune_intermediate_layers(indices=[1]) == [1] and len(model.stages) == 2
    assert not any(name.startswith("head.") for name, _ in model.named_parameters())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_hard_distillation_with_a_timm_teacher():
    teacher = timm.create_model("resnet10t", num_classes=5).eval()
    student = timm.create_model("groupmamba_tiny", num_classes=5, **tiny_kwargs("groupmamba_tiny"))
    student.set_distilled_training(True)
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    criterion = HardDistillationLoss(teacher, alpha=0.5)
    criterion.train()
    assert not criterion.teacher.training
    outputs = student(images)
    loss = criterion(images, outputs, targets)
    with torch.no_grad():
        hard = teacher(images).argmax(-1)
    expected = 0.5 * F.cross_entropy(outputs[0], targets) + 0.5 * F.cross_entropy(outputs[1], hard)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.head.fc.weight.grad is not None and student.head.fc_dist.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="set_distilled_training"):
        hard_distillation_loss(outputs[0], targets, outputs[1])


def official_state_dict():
    """Random tensors under every key (and shape) of the official groupmamba_tiny state dict."""
    state = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = re.match(r"(\S+) \(([\d, ]*)\)", line).groups()
        dims = [int(s) for s in shape.split(",") if s.strip()]
        state[key] = torch.randint(0, 10, ()) if key.endswith("num_batches_tracked") else torch.randn(*dims)
    return state


def test_official_keys_load_strictly_and_land_where_they_belong():
    official = official_state_dict()
    assert len(official) == 1266
    assert sum(t.numel() for k, t in official.items() if "num_batches" not in k and "running" not in k) == 23_361_917
    model = timm.create_model("groupmamba_tiny")
    model.load_state_dict(convert_official_state_dict(official, model), strict=True)
    ours = model.state_dict()
    pairs = {
        "patch_embed1.conv.0.weight": "stem.convs.0.0.weight",
        "patch_embed1.conv.7.running_var": "stem.convs.2.1.running_var",
        "patch_embed1.proj.bias": "stem.down.conv.bias",
        "patch_embed1.norm.weight": "stem.down.norm.weight",
        "patch_embed3.proj.weight": "stages.2.downsample.conv.weight",
        "norm2.bias": "stages.1.norm.bias",
        "norm4.weight": "head.norm.weight",
        "block2.3.attn.skip_scale": "stages.1.blocks.3.mixer.skip_scale",
        "block3.8.mlp.dwconv.dwconv.weight": "stages.2.blocks.8.mlp.dwconv.weight",
        "block4.2.norm2.weight": "stages.3.blocks.2.norm2.weight",
        "post_network.0.attn.fc1.weight": "head.mixer.fc1.weight",
        "post_network.0.mlp.fc2.bias": "head.mlp.fc2.bias",
        "post_network.0.norm1.bias": "head.norm1.bias",
        "head.weight": "head.fc.weight",
        "dist_head.bias": "head.fc_dist.bias",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], official[theirs])
    # the four groups' tensors, stacked (projections) or concatenated (per-channel tensors)
    E = 87
    for k in range(4):
        g = f"block3.1.attn.mamba_g{k + 1}."
        mixer = "stages.2.blocks.1.mixer.ssm."
        sl = slice(k * E, (k + 1) * E)
        torch.testing.assert_close(ours[mixer + "in_proj.weight"][k], official[g + "in_proj.weight"])
        torch.testing.assert_close(ours[mixer + "out_proj.weight"][k], official[g + "out_proj.weight"])
        torch.testing.assert_close(ours[mixer + "x_proj_weight"][k], official[g + "x_proj_weight"][0])
        torch.testing.assert_close(ours[mixer + "dt_proj_weight"][k], official[g + "dt_projs_weight"][0])
        torch.testing.assert_close(ours[mixer + "dt_bias"][k], official[g + "dt_projs_bias"][0])
        for theirs, mine in (("conv2d.weight", "conv.weight"), ("A_logs", "A_log"), ("Ds", "D"),
                             ("out_norm.bias", "out_norm.bias")):
            torch.testing.assert_close(ours[mixer + mine][sl], official[g + theirs])


def test_other_class_counts_drop_both_classifiers():
    official = official_state_dict()
    model = timm.create_model("groupmamba_tiny", num_classes=10)
    converted = convert_official_state_dict({"model": official}, model)
    assert converted["head.fc_dist.weight"].shape == (1000, 448)  # timm's loader drops mis-sized classifiers
    del official["block1.0.attn.mamba_g2.Ds"]
    with pytest.raises(CheckpointMismatchError, match=r"mixer\.mamba_g1\.Ds") as err:
        convert_official_state_dict(official, model)
    assert "stages.0.blocks.0.mixer.ssm.D" in str(err.value)
