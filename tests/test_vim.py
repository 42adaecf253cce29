"""Vim: the BiMamba mixer against the official equations, the plain-model timm interface (dynamic input
sizes, intermediates, features), and official-checkpoint conversion. tests/test_models.py covers the
parameter and FLOP counts and forward/backward of every Vim model."""
import argparse
import re
from pathlib import Path

import pytest
import timm
import timm.optim
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

import ssm_kernels
import vmamba_zoo  # noqa: F401  (registers the models)
from ssm_kernels.reference import selective_scan_naive
from vmamba_zoo.layers import BiMamba
from vmamba_zoo.models import CheckpointMismatchError, convert_official_state_dict
from vmamba_zoo.models.vim import TINY_KWARGS, Vim, resample_pos_embed

KEYS = Path(__file__).parent / "data" / "vim_tiny_keys.txt"


def tiny(name="vim_tiny", **kwargs):
    return timm.create_model(name, **dict(TINY_KWARGS, **kwargs))


def official_mixer(mixer: BiMamba, h: torch.Tensor) -> torch.Tensor:
    """The official bimamba v2 equations, branch by branch on flipped copies (as mamba_simple.Mamba's fast
    path runs them), from our stacked parameters split back into the official per-direction ones."""
    E, R, N = mixer.d_inner, mixer.dt_rank, mixer.d_state
    W = mixer.conv_weight.shape[-1]
    xz = mixer.in_proj(h).transpose(1, 2)                                       # (B, 2E, L)
    L = xz.shape[-1]
    outs = []
    for k, seq in enumerate((xz, xz.flip(-1))):
        x, z = seq.chunk(2, dim=1)
        ch = slice(k * E, (k + 1) * E)
        u = F.silu(F.conv1d(x, mixer.conv_weight[k][:, None], mixer.conv_bias[ch], padding=W - 1, groups=E)[..., :L])
        x_dbl = u.transpose(1, 2) @ mixer.x_proj_weight[k].t()                  # (B, L, R + 2N)
        delta = (x_dbl[..., :R] @ mixer.dt_proj_weight[k].t()).transpose(1, 2)
        B, C = x_dbl[..., R:R + N].transpose(1, 2), x_dbl[..., R + N:].transpose(1, 2)
        y = selective_scan_naive(u, delta, -mixer.A_log[ch].exp(), B, C, mixer.D[ch], z, mixer.dt_bias[ch], True)
        outs.append(y if k == 0 else y.flip(-1))
    return mixer.out_proj(((outs[0] + outs[1]) / 2).transpose(1, 2))


def test_bimamba_is_the_official_two_branch_mixer():
    mixer = BiMamba(8, d_state=4)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    h = torch.randn(2, 9, 8)
    torch.testing.assert_close(mixer(h), official_mixer(mixer, h), rtol=1e-5, atol=1e-6)



@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
def test_bimamba_on_triton_matches_reference(monkeypatch):
    """One conv launch and one fused scan for both directions (the GPU path), forward and backward."""
    mixer = BiMamba(8, d_state=4)
    h = torch.randn(2, 11, 8)
    outs, grads = {}, {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        mixer.zero_grad()
        outs[backend] = mixer(h)
        outs[backend].square().sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in mixer.named_parameters()}
    torch.testing.assert_close(outs["triton"], outs["reference"], rtol=1e-5, atol=1e-6)
    for name, g in grads["reference"].items():
        torch.testing.assert_close(grads["triton"][name], g, rtol=1e-4, atol=1e-6, msg=name)


# ---- the model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,size,grid", [
    ("vim_tiny", (224, 224), (14, 14)), ("vim_tiny", (384, 384), (24, 24)), ("vim_tiny", (224, 160), (14, 10)),
    ("vim_tiny_stride8", (224, 224), (27, 27)), ("vim_tiny_stride8", (64, 96), (7, 11)),
])
def test_any_size_divisible_by_the_stride(name, size, grid):
    model = tiny(name, num_classes=5).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        assert final.shape == (1, grid[0] * grid[1] + 1, 16)
        assert [tuple(f.shape) for f in feats] == [(1, 16, *grid)] * 2
        assert model(x).shape == (1, 5)


def test_position_embedding_interpolation_keeps_the_class_token_in_the_middle():
    pos = torch.randn(1, 14 * 14 + 1, 8)
    assert resample_pos_embed(pos, (14, 14), (14, 14)) is pos
    new = resample_pos_embed(pos, (24, 20), (14, 14))
    assert new.shape == (1, 24 * 20 + 1, 8)
    torch.testing.assert_close(new[:, 240], pos[:, 98])
    patches = torch.cat([pos[:, :98], pos[:, 99:]], dim=1)
    expected = resample_abs_pos_embed(patches, [24, 20], [14, 14], num_prefix_tokens=0)
    torch.testing.assert_close(torch.cat([new[:, :240], new[:, 241:]], dim=1), expected)


def test_class_token_sits_in_the_middle_and_the_head_reads_it():
    model = tiny(num_classes=3).eval()
    x = torch.randn(2, 3, 64, 48)   # 4 x 3 = 12 patches: the class token at index 6 of 13
    with torch.no_grad():
        tokens, _ = model._embed(x)
        expected = model.cls_token[0, 0] + resample_pos_embed(model.pos_embed, (4, 3), (14, 14))[0, 6]
        torch.testing.assert_close(tokens[0, 6], expected)
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats[:, 6])
        torch.testing.assert_close(model(x), model.head(feats[:, 6]))


def test_intermediates_follow_timms_vit_conventions():
    model = tiny().eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        nlc = model.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)[0]
        assert nlc.shape == (1, 24, 16)
        torch.testing.assert_close(nlc.transpose(1, 2).reshape(1, 16, 4, 6), feats[1])
        (normed, cls), = model.forward_intermediates(x, indices=[1], norm=True, return_prefix_tokens=True,
                                                     intermediates_only=True)
        assert cls.shape == (1, 1, 16)
        torch.testing.assert_close(cls[:, 0], final[:, 12])
        torch.testing.assert_close(normed.flatten(2).transpose(1, 2), torch.cat([final[:, :12], final[:, 13:]], 1))
        early = model.forward_intermediates(x, indices=1, stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], feats[1])
        with pytest.raises(ValueError, match="output_fmt"):
            model.forward_intermediates(x, output_fmt="NHCW")
    assert model.prune_intermediate_layers(indices=[0], prune_norm=True) == [0]
    assert len(model.blocks) == 1 and model.num_classes == 0 and isinstance(model.norm, torch.nn.Identity)


def test_features_only_returns_block_maps():
    model = timm.create_model("vim_tiny", features_only=True)
    assert model.feature_info.channels() == [192] * 4 and model.feature_info.reduction() == [16] * 4
    feats = model(torch.randn(1, 3, 64, 32))
    assert [tuple(f.shape) for f in feats] == [(1, 192, 4, 2)] * 4
    model = tiny("vim_small_stride8", features_only=True, out_indices=(1,))
    assert [tuple(f.shape) for f in model(torch.randn(1, 3, 64, 64))] == [(1, 16, 7, 7)]


def test_head_classifier_and_pooling_api():
    model = tiny(num_classes=0).eval()
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 16)
    model.reset_classifier(5, "avg")
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True),
                                   torch.cat([feats[:, :4], feats[:, 5:]], 1).mean(1))
        assert model(x).shape == (2, 5) and model.get_classifier().out_features == 5
    model.reset_classifier(5, "max")  # the patch tokens' maximum, as timm's ViTs pool 'max'
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True),
                                   torch.cat([feats[:, :4], feats[:, 5:]], 1).amax(1))
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(5, "map")


def test_grad_checkpointing_gives_same_output_and_grads():
    model = tiny(num_classes=3)
    x = torch.randn(1, 3, 32, 32)
    model(x).sum().backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[n], rtol=1e-4, atol=1e-6)


def test_optimizer_groups_follow_the_official_recipe():
    """timm's factory with the official rule: pos_embed, cls_token and every 1-D tensor undecayed."""
    model = tiny()
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    mixer = model.blocks[0].mixer
    for p in (model.pos_embed, model.cls_token, mixer.D, mixer.dt_bias, mixer.conv_bias, model.norm.weight,
              model.blocks[0].norm1.weight, model.head.bias, model.patch_embed.proj.bias):
        assert id(p) in no_decay
    for p in (mixer.A_log, mixer.conv_weight, mixer.x_proj_weight, mixer.dt_proj_weight, mixer.in_proj.weight):
        assert id(p) not in no_decay
    assert len(timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.9).param_groups) > 4


def test_other_input_channels():
    model = tiny(in_chans=1, num_classes=2)
    assert model(torch.randn(2, 1, 32, 48)).shape == (2, 2)


@pytest.mark.parametrize("bad,message", [
    (torch.randn(2, 4, 64, 64), "expects 3 input channels, got 4"),
    (torch.randn(2, 64, 64, 3), "expects 3 input channels, got 64"),
    (torch.randn(2, 3, 64, 72), "divisible by its patch stride 16"),
    (torch.randn(3, 64, 64), "4-D image batch"),
])
def test_bad_input_raises_clear_error(bad, message):
    model = tiny()
    for fn in (model, model.forward_features, model.forward_intermediates):
        with pytest.raises(ValueError, match=message):
            fn(bad)
    with pytest.raises(ValueError, match="divisible by its patch stride 8 \\(and at least 16\\)"):
        tiny("vim_tiny_stride8")(torch.randn(1, 3, 8, 8))


# ---- official checkpoints -----------------------------------------------------------------------

def official_state_dict():
    """Random tensors under every key (and shape) of the official Vim-Ti state dict."""
    state = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = re.match(r"(\S+) \(([\d, ]*)\)", line).groups()
        state[key] = torch.randn(*[int(s) for s in shape.split(",") if s.strip()])
    return state


def test_official_keys_load_strictly_and_land_where_they_belong():
    official = official_state_dict()
    assert len(official) == 415 and sum(t.numel() for t in official.values()) == 7_148_008
    model = timm.create_model("vim_tiny")
    model.load_state_dict(convert_official_state_dict({"model": official}, model), strict=True)
    ours = model.state_dict()
    same = {"cls_token": "cls_token", "patch_embed.proj.weight": "patch_embed.proj.weight", "head.bias": "head.bias",
            "layers.3.norm.weight": "blocks.3.norm1.weight", "norm_f.weight": "norm.weight",
            "layers.5.mixer.in_proj.weight": "blocks.5.mixer.in_proj.weight",
            "layers.23.mixer.out_proj.weight": "blocks.23.mixer.out_proj.weight"}
    for theirs, mine in same.items():
        torch.testing.assert_close(ours[mine], official[theirs])
    m, o = "blocks.7.mixer.", "layers.7.mixer."
    torch.testing.assert_close(ours[m + "conv_weight"][1], official[o + "conv1d_b.weight"][:, 0])
    torch.testing.assert_close(ours[m + "conv_bias"][:384], official[o + "conv1d.bias"])
    torch.testing.assert_close(ours[m + "x_proj_weight"][1], official[o + "x_proj_b.weight"])
    torch.testing.assert_close(ours[m + "dt_proj_weight"][0], official[o + "dt_proj.weight"])
    torch.testing.assert_close(ours[m + "dt_bias"][384:], official[o + "dt_proj_b.bias"])
    torch.testing.assert_close(ours[m + "A_log"][384:], official[o + "A_b_log"])
    torch.testing.assert_close(ours[m + "D"][:384], official[o + "D"])
    # our own state dict passes through unchanged
    again = convert_official_state_dict(ours, model)
    assert all(torch.equal(again[k], v) for k, v in ours.items())


def test_mismatched_keys_are_all_listed():
    official = official_state_dict()
    del official["layers.2.mixer.D_b"]
    official["layers.0.mixer.extra"] = torch.zeros(1)
    official["layers.1.mixer.in_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        convert_official_state_dict(official, timm.create_model("vim_tiny"))
    message = str(err.value)
    for problem in ("blocks.2.mixer.D: checkpoint (384,) vs model (768,)",  # D without its backward half D_b
                    "blocks.0.mixer.extra", "blocks.1.mixer.in_proj.weight: checkpoint (3, 3)"):
        assert problem in message


def test_pretrained_file_loads_at_another_size_and_class_count(tmp_path):
    """An official training checkpoint (with its pickled argparse arguments) through timm's pretrained
    path: the position embedding resampled to 384x384, a new classifier."""
    official = official_state_dict()
    path = tmp_path / "vim_t_midclstok_76p1acc.pth"
    torch.save({"model": official, "args": argparse.Namespace(model="vim_tiny"), "epoch": 299}, path)
    model = timm.create_model("vim_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              num_classes=10, img_size=384)
    assert model.pos_embed.shape == (1, 577, 192) and model.head.out_features == 10
    torch.testing.assert_close(model.pos_embed[0, 288], official["pos_embed"][0, 98])
    torch.testing.assert_close(model.blocks[0].mixer.D[384:], official["layers.0.mixer.D_b"])


def test_stride8_checkpoint_differs_only_in_the_position_embedding():
    stride16, stride8 = Vim(stride=16, depth=1), Vim(stride=8, depth=1)
    shapes16 = {k: v.shape for k, v in stride16.state_dict().items()}
    shapes8 = {k: v.shape for k, v in stride8.state_dict().items()}
    assert {k for k in shapes16 if shapes16[k] != shapes8[k]} == {"pos_embed"}
    assert shapes8["pos_embed"] == (1, 730, 192)


@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
def test_torch_compile_single_graph_matches_eager(monkeypatch):
    """The conv1d and scan Triton ops are custom ops: torch.compile traces the whole model in one graph."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    torch._dynamo.reset()
    model = Vim(embed_dim=16, depth=1, d_state=4, num_classes=3)
    x = torch.randn(2, 3, 32, 48)
    eager = model(x)
    eager.sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    compiled.sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.skipif("triton" not in ssm_kernels.available_backends(), reason="triton not installed")
def test_flops_do_not_depend_on_the_backend(monkeypatch):
    """The conv1d node and the fused scan node count as the official conv1d, x/dt projections and scans."""
    from vmamba_zoo.profiling import count_flops
    model = Vim(embed_dim=16, depth=1, d_state=4, num_classes=3)
    counts = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        counts[backend] = count_flops(model, (3, 32, 32))
    L, D, E, R, N = 5, 16, 32, 1, 4   # 4 patches + the class token
    per_block = L * D * 2 * E + L * E * D + 2 * L * E * 4 + 2 * L * E * (R + 2 * N) + 2 * L * E * R \
        + 2 * (9 * L * E * N + L * E)
    assert counts["triton"] == counts["reference"] == 4 * D * 3 * 256 + per_block + D * 3
