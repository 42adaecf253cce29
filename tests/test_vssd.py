"""VSSD specifics: official-checkpoint conversion (synthetic state dict from the official key list), the
NC-SSD mixer against its equations written out, the registered hyper-parameters."""
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo.models import CheckpointMismatchError, convert_official_state_dict
from vmamba_zoo.models.vssd import NonCausalSSDMixer, checkpoint_filter_fn

KEYS = Path(__file__).parent / "data" / "vssd_tiny_keys.txt"


def official_state_dict():
    """Random tensors under every key (and shape) of the official VSSD-Tiny state dict."""
    state = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = re.match(r"(\S+) \(([\d, ]*)\)", line).groups()
        dims = tuple(int(s) for s in shape.split(",") if s.strip())
        state[key] = torch.tensor(7) if key.endswith("num_batches_tracked") else torch.randn(dims)
    return state


def test_official_keys_load_strictly_and_land_where_they_belong():
    official = official_state_dict()
    params = sum(t.numel() for k, t in official.items() if "running_" not in k and "num_batches" not in k)
    assert len(official) == 421 and params == 24_270_724
    model = timm.create_model("vssd_tiny")
    model.load_state_dict(convert_official_state_dict(official, model), strict=True)
    ours = model.state_dict()
    pairs = {
        "patch_embed.conv1.conv.weight": "stem.conv1.0.weight",
        "patch_embed.conv2.1.norm.running_var": "stem.residual.1.1.running_var",
        "patch_embed.conv3.0.conv.weight": "stem.conv2.0.weight",
        "patch_embed.conv3.1.norm.bias": "stem.proj.1.bias",
        "layers.0.blocks.1.cpe1.weight": "stages.0.blocks.1.cpe1.proj.weight",
        "layers.2.blocks.7.cpe2.bias": "stages.2.blocks.7.cpe2.proj.bias",
        "layers.1.blocks.0.attn.A_log": "stages.1.blocks.0.mixer.A_log",
        "layers.1.blocks.3.attn.conv2d.weight": "stages.1.blocks.3.mixer.conv.weight",
        "layers.2.blocks.0.attn.in_proj.weight": "stages.2.blocks.0.mixer.in_proj.weight",
        "layers.0.blocks.0.attn.norm.weight": "stages.0.blocks.0.mixer.norm.weight",
        "layers.3.blocks.2.attn.to_qkv.weight": "stages.3.blocks.2.mixer.qkv.weight",
        "layers.3.blocks.3.attn.to_out.bias": "stages.3.blocks.3.mixer.proj.bias",
        "layers.0.downsample.conv.0.conv.weight": "stages.1.downsample.expand.weight",
        "layers.1.downsample.conv.1.conv.bias": "stages.2.downsample.dwconv.bias",
        "layers.2.downsample.conv.2.conv.weight": "stages.3.downsample.proj.weight",
        "layers.2.downsample.conv.2.norm.running_mean": "stages.3.downsample.norm.running_mean",
        "norm.weight": "norm_pre.weight",
        "head.weight": "head.fc.weight",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], official[theirs])


def test_mismatches_are_listed_and_ema_weights_are_chosen_for_ema_files():
    official = official_state_dict()
    model = timm.create_model("vssd_tiny")
    del official["layers.0.blocks.0.attn.D"]
    with pytest.raises(CheckpointMismatchError, match=r"stages\.0\.blocks\.0\.mixer\.D"):
        checkpoint_filter_fn(official, model)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        checkpoint_filter_fn(official_state_dict(), timm.create_model("vssd_micro"))
    model_sd, ema_sd = official_state_dict(), official_state_dict()
    checkpoint = {"model": model_sd, "model_ema": ema_sd, "epoch": 299}
    for url, want in (("https://x/vssd_tiny_best_ema.pth", ema_sd), ("https://x/vssd_micro_best.pth", model_sd)):
        model.pretrained_cfg = dict(model.pretrained_cfg, url=url)
        got = checkpoint_filter_fn(checkpoint, model)
        torch.testing.assert_close(got["head.fc.weight"], want["head.weight"])


def _mixer_by_the_equations(m: NonCausalSSDMixer, u):
    """The NC-SSD mixer written out as in the paper, in float64 (independent of ssm_kernels)."""
    b, h, w, _ = u.shape
    E, N, H, P = m.inner, m.d_state, m.num_heads, m.head_dim
    z, xbc, dt = (u @ m.in_proj.weight.T).split([E, E + 2 * N, H], dim=-1)
    xbc = F.silu(F.conv2d(xbc.permute(0, 3, 1, 2), m.conv.weight, m.conv.bias, padding=1, groups=E + 2 * N))
    x, B, C = xbc.permute(0, 2, 3, 1).reshape(b, h * w, -1).split([E, N, N], dim=-1)
    x = x.reshape(b, h * w, H, P)
    delta = F.softplus(dt.reshape(b, h * w, H) + m.dt_bias)
    y = torch.zeros_like(x)
    for head in range(H):
        v = x[:, :, head] * (delta[:, :, head] * m.A_log[head].exp())[..., None]   # (b, L, P)
        kv = B.transpose(1, 2) @ v                                                 # (b, N, P)
        y[:, :, head] = C @ kv + m.D[head] * x[:, :, head]
    y = F.layer_norm(y.reshape(b, h, w, E), (E,), m.norm.weight, m.norm.bias) * z
    return y @ m.out_proj.weight.T


def test_nc_ssd_mixer_follows_its_equations():
    torch.manual_seed(0)
    m = NonCausalSSDMixer(12, num_heads=3, d_state=5).double()
    with torch.no_grad():
        for p in (m.D, m.norm.weight, m.norm.bias, m.conv.bias):
            p.copy_(torch.randn_like(p))
    u = torch.randn(2, 3, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(m(u), _mixer_by_the_equations(m, u))


def test_registered_hyper_parameters():
    micro = timm.create_model("vssd_micro")
    mixer = micro.stages[0].blocks[0].mixer
    assert (mixer.d_state, mixer.num_heads, mixer.head_dim) == (48, 2, 48)
    assert [type(s.blocks[0].mixer).__name__ for s in micro.stages] == ["NonCausalSSDMixer"] * 3 + ["SoftmaxAttention"]
    assert micro.stages[3].blocks[3].drop_path.drop_prob == pytest.approx(0.2)  # not the yaml's 0.1: see CARD
    base = timm.create_model("vssd_base")
    assert base.stages[2].blocks[0].mixer.head_dim == 64 and base.stages[3].blocks[0].mixer.num_heads == 24


def test_triton_path_matches_reference_and_counts_the_same(monkeypatch):
    """A small VSSD end to end on the Triton kernels (interpreter) against the reference: logits, every
    parameter's gradient, and the FLOP count (the fused node is counted as the ops it replaces)."""
    from vmamba_zoo.models import vssd
    from vmamba_zoo.profiling import count_flops
    torch.manual_seed(0)
    model = timm.create_model("vssd_tiny", **vssd.TINY_KWARGS, num_classes=5, drop_path_rate=0.0)
    x = torch.randn(2, 3, 64, 32)
    results = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("SSM_KERNELS_BACKEND", backend)
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        results[backend] = out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, \
            count_flops(model, (3, 64, 32))
    (ref, ref_grads, ref_flops), (out, grads, flops) = results["reference"], results["triton"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
    assert flops == ref_flops


def test_timm_pretrained_from_an_official_ema_file(tmp_path):
    model_sd, ema_sd = official_state_dict(), official_state_dict()
    path = tmp_path / "vssd_tiny_best_ema.pth"
    torch.save({"model": model_sd, "model_ema": ema_sd, "epoch": 299}, path)
    model = timm.create_model("vssd_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), custom_load=True))
    torch.testing.assert_close(model.stages[2].blocks[7].mixer.A_log, ema_sd["layers.2.blocks.7.attn.A_log"])
    features = timm.create_model("vssd_tiny", pretrained=True, features_only=True, out_indices=(1, 3),
                                 pretrained_cfg_overlay=dict(file=str(path), custom_load=True))
    assert features.feature_info.channels() == [128, 512]
