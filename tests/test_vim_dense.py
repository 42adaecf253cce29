"""Vim for detection and segmentation: VimBackbone (taps, rotary embedding, pyramid, checkpoints), the
SimpleFPN neck, and the official recipes in the Vim configs. tests/test_mm.py runs every config for one
training and one inference step. (The taps, rope and pyramid were checked against the official
seg/backbone/vim.py on CPU with random weights: max |diff| 2.4e-7 / 8.6e-6 for the Ti / S recipes.)
"""
import math
import os
from pathlib import Path

import pytest
import torch

if not os.environ.get("CI"):
    pytest.importorskip("mmdet")
    pytest.importorskip("mmseg")
from mmengine.config import Config  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmdet.registry import MODELS as MMDET_MODELS  # noqa: E402
from mmseg.registry import MODELS as MMSEG_MODELS  # noqa: E402

from vmamba_zoo.mm import SimpleFPN, VimBackbone  # noqa: E402
from vmamba_zoo.mm.vim_backbone import apply_rope, rope_frequencies  # noqa: E402
from vmamba_zoo.models import CheckpointMismatchError  # noqa: E402
from vmamba_zoo.models.vim import TINY_KWARGS  # noqa: E402

from test_vim import official_state_dict  # noqa: E402

ROOT = Path(__file__).parents[1]
SMALL = dict(TINY_KWARGS, depth=4)  # embed 16, 4 blocks, d_state 4
BN = dict(type="BN")


def small(**kwargs):
    kwargs = dict(dict(model_name="vim_tiny", img_size=64, out_indices=(0, 1, 2, 3), model_kwargs=SMALL), **kwargs)
    return VimBackbone(**kwargs).eval()


# ---- backbone ------------------------------------------------------------------------------------
def test_maps_and_strides_at_a_non_square_size():
    x = torch.randn(2, 3, 64, 96)
    plain = small(out_indices=(1, -1))
    assert plain.out_indices == (1, 3) and plain.channels == (16, 16) and plain.strides == (16, 16)
    assert [tuple(o.shape) for o in plain(x)] == [(2, 16, 4, 6)] * 2
    pyramid = small(fpn=True, fpn_norm_cfg=BN)
    assert pyramid.strides == (4, 8, 16, 32)
    assert [tuple(o.shape) for o in pyramid(x)] == [(2, 16, 64 // s, 96 // s) for s in (4, 8, 16, 32)]
    # one tap, repeated into the four levels (the official single-output case)
    one = small(out_indices=(3,), fpn=True, fpn_norm_cfg=BN, rope=True)
    assert [tuple(o.shape[-2:]) for o in one(x)] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    # stride 8 (16x16 patches overlapping: a 7x11 grid at 64x96): deconv, identity, max-pools
    plus = small(model_name="vim_tiny_stride8", fpn=True)
    assert [tuple(o.shape[-2:]) for o in plus(x)] == [(14, 22), (7, 11), (3, 5), (1, 2)]
    # no class token, no final norm, no classifier, no blocks past the last tap
    keys = plain.state_dict()
    assert "model.cls_token" not in keys and not any(k.startswith(("model.norm", "model.head")) for k in keys)
    assert keys["model.pos_embed"].shape == (1, 16, 16) and len(plain.model.blocks) == 4


def test_bad_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="VimBackbone wraps Vim models"):
        VimBackbone("vmamba_tiny")
    with pytest.raises(ValueError, match="must name blocks of vim_tiny"):
        small(out_indices=(4,))
    with pytest.raises(ValueError, match="feature must be"):
        small(feature="hidden")
    with pytest.raises(ValueError, match="four taps or one"):
        small(out_indices=(0, 1), fpn=True)
    with pytest.raises(ValueError, match="divisible by its patch stride 16"):
        small()(torch.randn(1, 3, 64, 40))


def test_residual_taps_add_up_the_mixer_taps():
    """Residual stream after block i = after block i - 1 + block i's mixer output (eval: no drop path)."""
    torch.manual_seed(0)
    residual = small()
    mixer = small(feature="mixer")
    mixer.load_state_dict(residual.state_dict())
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        r, m = residual(x), mixer(x)
    for i in range(1, 4):
        torch.testing.assert_close(r[i] - r[i - 1], m[i], atol=1e-5, rtol=1e-5)


def test_rotary_embedding():
    cos, sin = rope_frequencies(16, (2, 3), step=14 / 32)
    assert cos.shape == (6, 16)
    angles = torch.atan2(sin, cos).reshape(2, 3, 16)
    # the first half of the channels turns with the row, the second with the column, in (even, odd) pairs
    assert torch.equal(angles[:, 0, :8], angles[:, 2, :8]) and torch.equal(angles[0, :, 8:], angles[1, :, 8:])
    assert torch.equal(angles[..., 0::2], angles[..., 1::2])
    torch.testing.assert_close(angles[1, 0, 2], torch.tensor(14 / 32 / 10000 ** (2 / 8)))
    x = torch.randn(2, 6, 16)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.unflatten(-1, (-1, 2)).norm(dim=-1), x.unflatten(-1, (-1, 2)).norm(dim=-1))
    torch.testing.assert_close(y[:, 0], x[:, 0])  # position (0, 0): no rotation
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_frequencies(6, (2, 2), 1.0)


def test_drop_path_and_its_last_block():
    backbone = VimBackbone("vim_tiny", out_indices=(0, 1, 2, 3), model_kwargs=SMALL, drop_path_rate=0.1)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in backbone.model.blocks]
    assert rates[:3] == pytest.approx([0.0, 0.1 / 3, 0.2 / 3]) and rates[3] == 0.0  # the official last 'add'


# ---- checkpoints ---------------------------------------------------------------------------------
def test_official_classifier_checkpoint_loads_at_the_dense_grid(tmp_path):
    official = official_state_dict()
    path = tmp_path / "vim_t_midclstok_76p1acc.pth"
    torch.save({"model": official, "epoch": 300}, path)
    backbone = VimBackbone("vim_tiny", img_size=512, fpn=True, fpn_norm_cfg=BN,
                           init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    fpn_before = backbone.fpn1[0].weight.clone()
    backbone.init_weights()
    state = backbone.state_dict()
    torch.testing.assert_close(state["model.blocks.23.mixer.out_proj.weight"],
                               official["layers.23.mixer.out_proj.weight"])
    torch.testing.assert_close(state["model.blocks.4.mixer.A_log"][192 * 2:], official["layers.4.mixer.A_b_log"])
    # the class entry (index 98 of 197) is dropped and the 14x14 grid interpolated to 32x32
    pos = official["pos_embed"]
    patches = torch.cat([pos[:, :98], pos[:, 99:]], dim=1).reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(patches, size=(32, 32), mode="bicubic", align_corners=False,
                                               antialias=True).flatten(2).transpose(1, 2)
    torch.testing.assert_close(state["model.pos_embed"], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(backbone.fpn1[0].weight, fpn_before)  # not in a classifier: kept as initialised


def test_official_dense_backbone_checkpoint_loads():
    """The official seg / det backbone's keys: no class token, a patch-only position embedding, rope
    buffers, the pyramid's fpn*, no norm_f (the detector deletes it); inside a whole segmentor's."""
    backbone = VimBackbone("vim_tiny", img_size=64, fpn=True, fpn_norm_cfg=BN)
    dense = {k: v for k, v in official_state_dict().items() if not k.startswith(("head.", "cls_token", "norm_f"))}
    dense["pos_embed"] = torch.randn(1, 16, 192)
    dense.update({"rope.freqs_cos": torch.randn(16, 192), "rope.freqs_sin": torch.randn(16, 192)})
    dense.update({k: torch.randn_like(v.float()).to(v.dtype) for k, v in backbone.state_dict().items()
                  if k.startswith("fpn")})
    converted = backbone.convert_checkpoint({"state_dict": {f"backbone.{k}": v for k, v in dense.items()}})
    assert set(converted) == set(backbone.state_dict())
    torch.testing.assert_close(converted["model.pos_embed"], dense["pos_embed"])
    torch.testing.assert_close(converted["model.blocks.2.norm1.weight"], dense["layers.2.norm.weight"])
    assert converted["fpn1.1.running_var"] is dense["fpn1.1.running_var"]
    backbone.load_checkpoint({"state_dict": {f"backbone.{k}": v for k, v in dense.items()}})


def test_our_own_checkpoints_load_back_and_mismatches_are_listed():
    source = small(fpn=True, fpn_norm_cfg=BN, rope=True)
    ours = source.state_dict()
    target = small(fpn=True, fpn_norm_cfg=BN, rope=True)
    target.load_checkpoint({"state_dict": {f"backbone.{k}": v for k, v in ours.items()}, "meta": {}})
    assert all(torch.equal(target.state_dict()[k], v) for k, v in ours.items())
    with pytest.raises(CheckpointMismatchError, match="fpn1.0.weight"):
        small().load_checkpoint({k: v for k, v in ours.items()})
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        VimBackbone("vim_small", img_size=64).load_checkpoint({"model": official_state_dict()})


# ---- neck ----------------------------------------------------------------------------------------
def test_simple_fpn_levels():
    neck = SimpleFPN([192], out_channels=32)
    outs = neck((torch.randn(2, 192, 6, 10),))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 24, 40), (2, 32, 12, 20), (2, 32, 6, 10), (2, 32, 3, 5),
                                              (2, 32, 2, 3)]
    # ViTDet's channel halving in the upsampling branches; no conv bias under the LayerNorms
    assert neck.stages[0][3].out_channels == 48 and neck.stages[1][0].out_channels == 96
    assert all(m.bias is None for m in neck.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="one input map"):
        SimpleFPN([96, 192])
    with pytest.raises(ValueError, match="scale factors must be"):
        SimpleFPN(192, scale_factors=(3.0,), num_outs=1)


# ---- the official recipes in the configs -----------------------------------------------------------
VIM_CONFIGS = {
    # config: (model, feature, rope, lr, weight decay, images per GPU, iterations, layer decay of the blocks
    # (block 0's lr multiplier), of the embeddings)
    "configs/mmseg/upernet_vim-ti_4xb8-60k_ade20k-512x512.py": ("vim_tiny", "mixer", False, 2e-4, 0.1, 8, 60000,
                                                                 1.0, 0.92 ** 25),
    "configs/mmseg/upernet_vim-s_4xb8-60k_ade20k-512x512.py": ("vim_small", "residual", True, 1e-4, 0.05, 8, 60000,
                                                                1.0, 0.95 ** 25),
    "configs/mmdet/cascade-mask-rcnn_vim-ti_simple-fpn_4xb16-lsj-100e_coco.py": (
        "vim_tiny", "residual", True, 1e-4, 0.1, 16, 184375, 0.837 ** 24, 0.837 ** 25),
}


@pytest.mark.parametrize("path", sorted(VIM_CONFIGS))
def test_vim_configs_carry_the_official_recipes(path):
    model_name, feature, rope, lr, weight_decay, per_gpu, iters, block0, embed = VIM_CONFIGS[path]
    cfg = Config.fromfile(ROOT / path)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.model_name, backbone.feature, backbone.rope) == ("VimBackbone", model_name,
                                                                                      feature, rope)
    assert backbone.drop_path_rate == 0.1 and backbone.init_cfg.checkpoint.startswith("https://huggingface.co/hustvl/")
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ("AdamW", lr, weight_decay)
    assert cfg.train_dataloader.batch_size == per_gpu and cfg.train_cfg.max_iters == iters
    if cfg.default_scope == "mmseg":
        assert backbone.out_indices == (5, 11, 17, 23) and backbone.fpn and backbone.img_size == 512
        assert cfg.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
        assert cfg.model.decode_head.channels == cfg.model.decode_head.in_channels[0]
    else:
        assert backbone.out_indices == (23,) and not backbone.fpn and backbone.img_size == 1024
        assert cfg.model.type == "CascadeRCNN" and cfg.model.neck.type == "SimpleFPN"
    # lr multipliers and weight decay per parameter, on the same detector / segmentor with a tiny Vim
    init_default_scope(cfg.default_scope)
    tiny = Config(dict(cfg.to_dict()))
    tiny.model.backbone.update(model_kwargs=dict(TINY_KWARGS, depth=24), init_cfg=None)
    if cfg.default_scope == "mmdet":
        tiny.model.neck.in_channels = [16]
    else:
        tiny.model.decode_head.update(in_channels=[16] * 4, channels=16)
        tiny.model.auxiliary_head.in_channels = 16
    model = (MMDET_MODELS if cfg.default_scope == "mmdet" else MMSEG_MODELS).build(tiny.model)
    groups = build_optim_wrapper(model, tiny.optim_wrapper).optimizer.param_groups
    found = {name: group for name, param in model.named_parameters()
             for group in groups if any(p is param for p in group["params"])}
    assert found["backbone.model.blocks.0.mixer.in_proj.weight"]["lr"] == pytest.approx(lr * block0)
    assert found["backbone.model.blocks.23.mixer.in_proj.weight"]["lr"] == pytest.approx(
        lr * (1.0 if block0 == 1.0 else 0.837))
    assert found["backbone.model.patch_embed.proj.weight"]["lr"] == pytest.approx(lr * embed)
    assert found["backbone.model.pos_embed"]["lr"] == pytest.approx(lr * embed)
    head = next(n for n, g in found.items() if not n.startswith("backbone.") and n.endswith(".weight")
                and model.get_parameter(n).dim() > 1)
    assert found[head]["lr"] == pytest.approx(lr) and found[head]["weight_decay"] == weight_decay
    decay = {name: group["weight_decay"] for name, group in found.items()}
    assert decay["backbone.model.blocks.3.mixer.x_proj_weight"] == weight_decay
    if cfg.default_scope == "mmseg":  # BEiT's rule: every 1-D parameter and bias undecayed, pos_embed decayed
        assert decay["backbone.model.pos_embed"] == weight_decay
        assert decay["backbone.model.blocks.3.norm1.weight"] == decay["backbone.model.blocks.3.mixer.D"] == 0.0
        assert decay["backbone.model.patch_embed.proj.bias"] == 0.0
    else:  # detectron2's: LayerNorms and the position embedding undecayed, RMSNorms and biases decayed
        assert decay["backbone.model.pos_embed"] == 0.0
        assert decay["backbone.model.blocks.3.norm1.weight"] == decay["backbone.model.blocks.3.mixer.D"] == weight_decay
        assert decay["neck.stages.0.4.1.weight"] == 0.0 and decay["neck.stages.0.4.0.weight"] == weight_decay
    assert not math.isnan(sum(g["lr"] for g in groups))


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = small(out_indices=(1, 3), rope=True, drop_path_rate=0.0).train()
    checkpointed = small(out_indices=(1, 3), rope=True, drop_path_rate=0.0, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 48)
    for backbone in (plain, checkpointed):
        sum(o.square().sum() for o in backbone(x)).backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
