"""Detection and segmentation: the mm backbone, every config, the train / test / flops tools.

Runs on CPU with mmcv's real compiled ops (RoIAlign, NMS), on tiny generated datasets. Skipped where
the OpenMMLab stack is not installed (INSTALL_MM=0), never under CI.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not os.environ.get("CI"):
    pytest.importorskip("mmdet")
    pytest.importorskip("mmseg")
import mmcv.ops  # noqa: E402  (the compiled ops; an ImportError here means mmcv was built without them)
import timm  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmdet.registry import MODELS as MMDET_MODELS  # noqa: E402
from mmseg.registry import MODELS as MMSEG_MODELS  # noqa: E402

import vmamba_zoo.mm  # noqa: E402
from vmamba_zoo.mm import VimBackbone, VisualSSMBackbone, convert_dense_state_dict  # noqa: E402
from vmamba_zoo.models import CheckpointMismatchError, family_module  # noqa: E402

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import flops  # noqa: E402
import make_toy_datasets  # noqa: E402
import test as test_tool  # noqa: E402
import train as train_tool  # noqa: E402

from test_checkpoint import official_state_dict  # noqa: E402

CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.py") if "_base_" not in p.parts)
MINI = dict(dims=(16, 32, 64, 128), depths=(1, 1, 1, 1))  # a fast vmamba_tiny-shaped backbone


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """The toy datasets at test size: 4 training and 2 validation images of 64x64 each."""
    root = tmp_path_factory.mktemp("toy")
    make_toy_datasets.main(["--out", str(root), "--train", "4", "--val", "2", "--size", "64", "--seed", "1"])
    return root


def mini_backbone(**kwargs):
    return VisualSSMBackbone(model_name="vmamba_tiny", model_kwargs=MINI, **kwargs)


# ---- the package ---------------------------------------------------------------------------------
def test_plain_import_does_not_load_openmmlab():
    code = ("import sys, vmamba_zoo, timm; timm.create_model('vmamba_tiny', features_only=True); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mmcv', 'mmdet', 'mmseg', 'mmengine') "
            "or m.startswith('vmamba_zoo.mm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_registered_in_mmdet_and_mmseg():
    assert vmamba_zoo.mm.REGISTERED_IN == ["mmdet", "mmseg"]
    assert MMDET_MODELS.get("VisualSSMBackbone") is VisualSSMBackbone
    assert MMSEG_MODELS.get("VisualSSMBackbone") is VisualSSMBackbone
    assert isinstance(MMSEG_MODELS.build(dict(type="VisualSSMBackbone", model_name="vmamba_tiny",
                                              model_kwargs=MINI)), VisualSSMBackbone)
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        VisualSSMBackbone(model_name="resnet50")


def test_mmcv_ops_are_the_compiled_ones():
    from mmcv.ops import RoIAlign, batched_nms
    assert "mmcv._ext" in sys.modules
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    kept, keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3), dict(type="nms", iou_threshold=0.5))
    assert keep.tolist() == [0, 2]
    feats = torch.arange(64, dtype=torch.float).view(1, 1, 8, 8)
    pooled = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=1, aligned=False)(feats, torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float))
    assert pooled.shape == (1, 1, 2, 2) and pooled[0, 0, 0, 0] == pytest.approx(feats[0, 0, 1, 1].item())


# ---- the backbone --------------------------------------------------------------------------------
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 2, 3), (2,), (-1,)])
def test_outputs_channels_and_strides(out_indices):
    backbone = mini_backbone(out_indices=out_indices)
    expected = [i % 4 for i in out_indices]
    assert backbone.out_indices == tuple(expected)
    assert backbone.channels == tuple(MINI["dims"][i] for i in expected)
    assert backbone.strides == tuple(4 * 2 ** i for i in expected)
    outs = backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, c, 64 // s, 96 // s) for c, s in zip(backbone.channels, backbone.strides)]
    # any input size, as the official backbones (each stride-2 conv rounds up)
    outs = backbone(torch.randn(1, 3, 50, 70))
    assert [tuple(o.shape[-2:]) for o in outs] == [(-(-50 // s), -(-70 // s)) for s in backbone.strides]
    # the parts dense prediction does not use are gone: no classifier, no final norm, no later stages
    assert len(backbone.model.stages) == max(expected) + 1
    assert not any(k.startswith(("model.norm_pre", "model.head")) for k in backbone.state_dict())
    assert [k for k in backbone.state_dict() if k.startswith("outnorm")] == \
        [f"outnorm{i}.{p}" for i in expected for p in ("weight", "bias")]


def test_full_size_backbone_matches_the_official_layout():
    backbone = VisualSSMBackbone(model_name="vmamba_tiny")
    official = official_state_dict()
    body = sum(v.numel() for k, v in official.items() if not k.startswith("classifier"))
    outnorms = 2 * (96 + 192 + 384 + 768)
    assert sum(p.numel() for p in backbone.parameters()) == body + outnorms
    drop_path = [m.drop_prob for m in backbone.modules() if type(m).__name__ == "DropPath"]
    assert max(drop_path) == pytest.approx(0.2)  # vmamba_tiny's own (official) rate
    assert max(m.drop_prob for m in VisualSSMBackbone(model_name="vmamba_tiny", drop_path_rate=0.35).modules()
               if type(m).__name__ == "DropPath") == pytest.approx(0.35)


def test_frozen_stages_are_really_frozen():
    backbone = mini_backbone(frozen_stages=2, drop_path_rate=0.0)
    backbone.train()
    frozen = ("model.stem.", "model.stages.0.", "model.stages.1.", "outnorm0.", "outnorm1.")
    for name, param in backbone.named_parameters():
        assert param.requires_grad == (not name.startswith(frozen)), name
    assert not backbone.model.stem.training and not backbone.model.stages[1].training
    assert backbone.model.stages[2].training and backbone.outnorm2.training
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    sum(o.square().mean() for o in backbone(torch.randn(2, 3, 64, 64))).backward()
    optimizer.step()
    after = backbone.state_dict()
    for key in before:
        assert torch.equal(before[key], after[key]) == key.startswith(frozen), key
    # frozen stays frozen through train() / eval() switches
    backbone.eval().train()
    assert not backbone.model.stages[0].training and not backbone.model.stages[0].blocks[0].mixer.in_proj.weight.requires_grad
    assert all(p.requires_grad for p in mini_backbone(frozen_stages=-1).parameters())
    stem_only = mini_backbone(frozen_stages=0)
    assert [n for n, p in stem_only.named_parameters() if not p.requires_grad] == \
        [n for n, _ in stem_only.named_parameters() if n.startswith("model.stem.")]


def test_norm_eval_keeps_batch_norm_layers_in_eval_mode():
    # VMamba has LayerNorms only; a BatchNorm is planted to see what norm_eval does to one
    for norm_eval in (True, False):
        backbone = mini_backbone(norm_eval=norm_eval)
        backbone.model.stages[1].extra_bn = torch.nn.BatchNorm2d(4)
        backbone.train()
        assert backbone.model.stages[1].extra_bn.training == (not norm_eval)
        assert backbone.model.stages[1].training and backbone.outnorm1.training


def _official_classifier_file(tmp_path):
    official = official_state_dict()
    path = tmp_path / "vssm1_tiny_official.pth"
    torch.save({"model": official, "epoch": 264}, path)
    return official, path


def _official_detector_state(official):
    """An official Mask R-CNN checkpoint's state dict: backbone.* (with outnorm0..3, no classifier), neck, heads."""
    state = {f"backbone.{k}": v for k, v in official.items() if not k.startswith("classifier.")}
    for i, channels in enumerate((96, 192, 384, 768)):
        state[f"backbone.outnorm{i}.weight"] = torch.randn(channels)
        state[f"backbone.outnorm{i}.bias"] = torch.randn(channels)
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(256, 96, 1, 1)
    return state


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 2)])
def test_init_cfg_loads_an_official_classification_checkpoint(tmp_path, out_indices):
    official, path = _official_classifier_file(tmp_path)
    backbone = MMDET_MODELS.build(dict(type="VisualSSMBackbone", model_name="vmamba_tiny", out_indices=out_indices,
                                       init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    norms_before = {k: v.clone() for k, v in backbone.state_dict().items() if k.startswith("outnorm")}
    backbone.init_weights()
    state = backbone.state_dict()
    torch.testing.assert_close(state["model.stem.conv1.weight"], official["patch_embed.0.weight"])
    torch.testing.assert_close(state["model.stages.1.downsample.norm.bias"], official["layers.0.downsample.3.bias"])
    torch.testing.assert_close(state[f"model.stages.{max(out_indices)}.blocks.1.mlp.fc2.weight"],
                               official[f"layers.{max(out_indices)}.blocks.1.mlp.fc2.weight"])
    for key, value in norms_before.items():  # a classifier has no output norms: they keep their init
        assert torch.equal(state[key], value)


def test_init_cfg_loads_an_official_detection_checkpoint(tmp_path):
    official = official_state_dict()
    detector = _official_detector_state(official)
    path = tmp_path / "mask_rcnn_vssm_fpn_coco_tiny_epoch_12.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": detector}, path)
    backbone = MMSEG_MODELS.build(dict(type="VisualSSMBackbone", model_name="vmamba_tiny", out_indices=(0, 1, 2),
                                       init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    backbone.init_weights()
    state = backbone.state_dict()
    for i in range(3):
        torch.testing.assert_close(state[f"outnorm{i}.weight"], detector[f"backbone.outnorm{i}.weight"])
    torch.testing.assert_close(state["model.stages.2.blocks.7.mixer.A_log"], official["layers.2.blocks.7.op.A_logs"])


def test_init_cfg_reports_key_mismatches(tmp_path):
    official, _ = _official_classifier_file(tmp_path)
    del official["layers.1.blocks.0.op.in_proj.weight"]
    official["layers.1.blocks.0.op.extra_thing"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save({"model": official}, path)
    backbone = VisualSSMBackbone(model_name="vmamba_tiny", init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError) as err:
        backbone.init_weights()
    assert "stages.1.blocks.0.mixer.in_proj.weight" in err.value.missing
    assert "stages.1.blocks.0.mixer.extra_thing" in err.value.unexpected
    # the wrong model size: every mis-shaped key is listed
    _, good = _official_classifier_file(tmp_path)
    small = VisualSSMBackbone(model_name="vmamba_small", init_cfg=dict(type="Pretrained", checkpoint=str(good)))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches") as err:
        small.init_weights()
    assert "stages.2.blocks.8.norm1.weight" in err.value.missing
    assert any(k.startswith("stages.0.blocks.0.mixer.in_proj.weight") for k in err.value.mis_shaped)


def test_our_own_checkpoints_load_back():
    source = mini_backbone(out_indices=(1, 2, 3))
    detector_state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    target = mini_backbone(out_indices=(1, 2, 3))
    target.load_checkpoint({"state_dict": detector_state, "meta": {}})
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key



def test_efficientvmamba_backbone_takes_an_official_detector_checkpoint():
    """Stage widths that double per stage, inverted-residual stages 2-3 (NCHW blocks, batch-norm buffers) behind the
    same wrapper: the official detection backbone's layout (classifier dropped, outnorm0..3 added) loads key for key."""
    from test_efficient_vmamba import official_state_dict as efficient_official
    official = efficient_official()
    backbone = VisualSSMBackbone(model_name="efficientvmamba_tiny", out_indices=(1, 2, 3))
    assert backbone.channels == (96, 192, 384) and backbone.strides == (8, 16, 32)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    body = sum(v.numel() for k, v in official.items() if not k.startswith("classifier.") and not k.endswith(buffers))
    assert sum(p.numel() for p in backbone.parameters()) == body + 2 * (96 + 192 + 384)
    detector = {f"backbone.{k}": v for k, v in official.items() if not k.startswith("classifier.")}
    for i, channels in enumerate((48, 96, 192, 384)):
        detector[f"backbone.outnorm{i}.weight"] = torch.randn(channels)
        detector[f"backbone.outnorm{i}.bias"] = torch.randn(channels)
    backbone.load_checkpoint({"meta": {}, "state_dict": detector})
    state = backbone.state_dict()
    # official stage 2 is Sequential(Permute, 4 inverted residuals, Permute, PatchMerging): block 3 sits at index 4
    torch.testing.assert_close(state["model.stages.2.blocks.3.bn1.running_var"], official["layers.2.4.conv_pw.1.running_var"])
    torch.testing.assert_close(state["model.stages.3.downsample.reduction.weight"], official["layers.2.6.reduction.weight"])
    torch.testing.assert_close(state["outnorm3.bias"], detector["backbone.outnorm3.bias"])
    outs = backbone.eval()(torch.randn(1, 3, 72, 40))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 9, 5), (1, 192, 5, 3), (1, 384, 3, 2)]

# ---- configs -------------------------------------------------------------------------------------
def _small_config(path, data):
    """A config from configs/ pointed at the tiny toy datasets, at 64x64, with no pretrained download."""
    cfg = Config.fromfile(ROOT / path)
    scope = cfg.default_scope
    cfg.model.backbone.init_cfg = None
    if scope == "mmdet":
        coco = data / "coco"
        pipeline_train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
                          dict(type="Resize", scale=(64, 64), keep_ratio=True), dict(type="PackDetInputs")]
        pipeline_test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(64, 64), keep_ratio=True),
                         dict(type="LoadAnnotations", with_bbox=True, with_mask=True), dict(type="PackDetInputs")]
        for split, loader, pipeline in (("train", cfg.train_dataloader, pipeline_train),
                                        ("val", cfg.val_dataloader, pipeline_test)):
            loader.update(batch_size=2, num_workers=0, persistent_workers=False)
            loader.dataset.update(data_root=str(coco), ann_file=f"annotations/instances_{split}.json",
                                  data_prefix=dict(img=f"{split}/"), pipeline=pipeline,
                                  metainfo=dict(classes=make_toy_datasets.SHAPES))
        if "rpn_proposal" in cfg.model.train_cfg:  # two-stage: fewer proposals than at full size, same code paths
            cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=50)
            rcnn = cfg.model.train_cfg.rcnn
            for stage in rcnn if isinstance(rcnn, list) else [rcnn]:  # Cascade R-CNN: one per stage
                stage.sampler.num = 32
            cfg.model.test_cfg.rpn.update(nms_pre=200, max_per_img=50)
        # ViTDet pads every image to its 1024x1024 training size: the same padding at test size
        if cfg.model.data_preprocessor.get("pad_size_divisor", 32) > 64:
            cfg.model.data_preprocessor.pad_size_divisor = 64
    else:
        ade = data / "ade"
        crop = (64, 64)
        cfg.model.data_preprocessor.size = crop
        pipeline_train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
                          dict(type="RandomResize", scale=(128, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
                          dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
                          dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")]
        pipeline_test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(96, 48), keep_ratio=True),
                         dict(type="LoadAnnotations", reduce_zero_label=True), dict(type="PackSegInputs")]
        for loader, pipeline in ((cfg.train_dataloader, pipeline_train), (cfg.val_dataloader, pipeline_test)):
            loader.update(batch_size=2, num_workers=0, persistent_workers=False)
            loader.dataset.update(data_root=str(ade), pipeline=pipeline)
    return cfg


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_and_runs_a_training_and_an_inference_step(path, toy_data):
    cfg = _small_config(path, toy_data)
    init_default_scope(cfg.default_scope)
    registry = MMDET_MODELS if cfg.default_scope == "mmdet" else MMSEG_MODELS
    model = registry.build(cfg.model)
    model.init_weights()
    backbone = model.backbone
    assert isinstance(backbone, (VisualSSMBackbone, VimBackbone))
    # the neck / decode head take what the backbone gives
    if cfg.default_scope == "mmdet":
        assert tuple(cfg.model.neck.in_channels) == backbone.channels
    else:
        assert tuple(cfg.model.decode_head.in_channels) == backbone.channels
        assert cfg.model.auxiliary_head.in_channels == backbone.channels[cfg.model.auxiliary_head.in_index]
    train_loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    val_loader = Runner.build_dataloader(cfg.val_dataloader, seed=0)
    optim_wrapper = _build_optim_wrapper(model, cfg)  # the config's paramwise settings included
    model.train()
    first = next((backbone.model.stem if isinstance(backbone, VisualSSMBackbone) else backbone.model.patch_embed).parameters())
    before = first.detach().clone()
    losses = model.train_step(next(iter(train_loader)), optim_wrapper)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, first)
    model.eval()
    with torch.no_grad():
        outputs = model.val_step(next(iter(val_loader)))
    assert len(outputs) == 2
    if cfg.default_scope == "mmdet":
        masks = {"masks"} if cfg.model.get("roi_head", {}).get("mask_head") else set()  # RetinaNet: boxes only
        assert {"bboxes", "scores", "labels"} | masks <= set(outputs[0].pred_instances.keys())
    else:
        assert outputs[0].pred_sem_seg.data.shape[-2:] == outputs[0].gt_sem_seg.data.shape[-2:]


def _build_optim_wrapper(model, cfg):
    from mmengine.optim import build_optim_wrapper
    return build_optim_wrapper(model, cfg.optim_wrapper)


PAPER_CONFIGS = {
    # config: (model, drop path, lr, weight decay, images per GPU, schedule)
    "configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py": ("vmamba_tiny", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_vmamba-t_fpn_ms-crop-3x_coco.py": ("vmamba_tiny", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmdet/mask-rcnn_vmamba-s_fpn_1x_coco.py": ("vmamba_small", 0.3, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_vmamba-s_fpn_ms-crop-3x_coco.py": ("vmamba_small", 0.3, 1e-4, 0.05, 2, 36),
    "configs/mmdet/mask-rcnn_vmamba-b_fpn_1x_coco.py": ("vmamba_base", 0.6, 1e-4, 0.05, 2, 12),
    "configs/mmseg/upernet_vmamba-t_8xb2-160k_ade20k-512x512.py": ("vmamba_tiny", 0.2, 6e-5, 0.01, 2, 160000),
    "configs/mmseg/upernet_vmamba-s_8xb2-160k_ade20k-512x512.py": ("vmamba_small", 0.3, 6e-5, 0.01, 2, 160000),
    "configs/mmseg/upernet_vmamba-b_8xb2-160k_ade20k-512x512.py": ("vmamba_base", 0.6, 6e-5, 0.01, 2, 160000),
    # GroupMamba: no official dense-prediction code; the VMamba-T recipes with the model's own drop path
    "configs/mmdet/mask-rcnn_groupmamba-t_fpn_1x_coco.py": ("groupmamba_tiny", 0.05, 1e-4, 0.05, 2, 12),
    "configs/mmseg/upernet_groupmamba-t_8xb2-160k_ade20k-512x512.py": ("groupmamba_tiny", 0.05, 6e-5, 0.01, 2,
                                                                       160000),
    "configs/mmdet/mask-rcnn_msvmamba-m_fpn_1x_coco.py": ("msvmamba_micro", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_msvmamba-m_fpn_ms-crop-3x_coco.py": ("msvmamba_micro", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmdet/mask-rcnn_msvmamba-t_fpn_1x_coco.py": ("msvmamba_tiny", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_msvmamba-t_fpn_ms-crop-3x_coco.py": ("msvmamba_tiny", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmseg/upernet_msvmamba-m_8xb2-160k_ade20k-512x512.py": ("msvmamba_micro", 0.3, 6e-5, 0.01, 2, 160000),
    "configs/mmseg/upernet_msvmamba-t_8xb2-160k_ade20k-512x512.py": ("msvmamba_tiny", 0.2, 6e-5, 0.01, 2, 160000),
    # VSSD: micro's dense-prediction recipes set drop path 0.1 (its classifier trained with 0.2)
    "configs/mmdet/mask-rcnn_vssd-m_fpn_1x_coco.py": ("vssd_micro", 0.1, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_vssd-m_fpn_ms-crop-3x_coco.py": ("vssd_micro", 0.1, 1e-4, 0.05, 2, 36),
    "configs/mmdet/mask-rcnn_vssd-t_fpn_1x_coco.py": ("vssd_tiny", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_vssd-t_fpn_ms-crop-3x_coco.py": ("vssd_tiny", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmdet/mask-rcnn_vssd-s_fpn_1x_coco.py": ("vssd_small", 0.4, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_vssd-s_fpn_ms-crop-3x_coco.py": ("vssd_small", 0.4, 1e-4, 0.05, 2, 36),
    "configs/mmseg/upernet_vssd-m_8xb2-160k_ade20k-512x512.py": ("vssd_micro", 0.1, 6e-5, 0.01, 2, 160000),
    "configs/mmseg/upernet_vssd-t_8xb2-160k_ade20k-512x512.py": ("vssd_tiny", 0.2, 6e-5, 0.01, 2, 160000),
    "configs/mmdet/mask-rcnn_spatialmamba-t_fpn_1x_coco.py": ("spatialmamba_tiny", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_spatialmamba-t_fpn_ms-crop-3x_coco.py": ("spatialmamba_tiny", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmdet/mask-rcnn_spatialmamba-s_fpn_1x_coco.py": ("spatialmamba_small", 0.3, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_spatialmamba-s_fpn_ms-crop-3x_coco.py": ("spatialmamba_small", 0.3, 1e-4, 0.05, 2, 36),
    "configs/mmdet/mask-rcnn_spatialmamba-b_fpn_1x_coco.py": ("spatialmamba_base", 0.5, 1e-4, 0.05, 2, 12),
    "configs/mmseg/upernet_spatialmamba-t_8xb2-160k_ade20k-512x512.py": ("spatialmamba_tiny", 0.2, 6e-5, 0.01, 2, 160000),
    "configs/mmseg/upernet_spatialmamba-s_8xb2-160k_ade20k-512x512.py": ("spatialmamba_small", 0.3, 6e-5, 0.01, 2, 160000),
    "configs/mmseg/upernet_spatialmamba-b_8xb2-160k_ade20k-512x512.py": ("spatialmamba_base", 0.5, 6e-5, 0.01, 2, 160000),
    # EfficientVMamba: RetinaNet as PVT's recipe (the paper), Mask R-CNN as Swin's (the official configs)
    "configs/mmdet/retinanet_efficientvmamba-t_fpn_1x_coco.py": ("efficientvmamba_tiny", 0.2, 1e-4, 1e-4, 2, 12),
    "configs/mmdet/mask-rcnn_efficientvmamba-t_fpn_1x_coco.py": ("efficientvmamba_tiny", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_efficientvmamba-t_fpn_ms-crop-3x_coco.py": ("efficientvmamba_tiny", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmseg/upernet_efficientvmamba-t_8xb2-160k_ade20k-512x512.py": ("efficientvmamba_tiny", 0.2, 6e-5, 0.01, 2, 160000),
    "configs/mmdet/retinanet_efficientvmamba-s_fpn_1x_coco.py": ("efficientvmamba_small", 0.2, 1e-4, 1e-4, 2, 12),
    "configs/mmdet/mask-rcnn_efficientvmamba-s_fpn_1x_coco.py": ("efficientvmamba_small", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_efficientvmamba-s_fpn_ms-crop-3x_coco.py": ("efficientvmamba_small", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmseg/upernet_efficientvmamba-s_8xb2-160k_ade20k-512x512.py": ("efficientvmamba_small", 0.2, 6e-5, 0.01, 2, 160000),
    "configs/mmdet/retinanet_efficientvmamba-b_fpn_1x_coco.py": ("efficientvmamba_base", 0.2, 1e-4, 1e-4, 2, 12),
    "configs/mmdet/mask-rcnn_efficientvmamba-b_fpn_1x_coco.py": ("efficientvmamba_base", 0.2, 1e-4, 0.05, 2, 12),
    "configs/mmdet/mask-rcnn_efficientvmamba-b_fpn_ms-crop-3x_coco.py": ("efficientvmamba_base", 0.2, 1e-4, 0.05, 2, 36),
    "configs/mmseg/upernet_efficientvmamba-b_8xb2-160k_ade20k-512x512.py": ("efficientvmamba_base", 0.2, 6e-5, 0.01, 2, 160000),
}

#: per family, backbone parameters whose official names contain 'norm' (the official recipes exempt those from
#: weight decay) and some whose official names do not (decayed), where our names differ from the official ones
DECAY_CHECKS = {
    "vmamba": (["stages.0.blocks.0.norm1.weight", "stages.0.blocks.0.mixer.out_norm.weight"],
               ["stem.norm1.weight", "stages.1.downsample.norm.weight", "stages.0.blocks.0.mixer.A_log"]),
    "msvmamba": (["stages.1.downsample.norm.weight", "stages.0.blocks.0.norm1.weight"],  # official downsample.norm
                 ["stem.norm.weight"]),                                                  # official patch_embed.2
    "vssd": (["stem.conv1.1.weight", "stem.residual.1.1.bias", "stem.proj.1.weight", "stages.1.downsample.norm.weight",
              "stages.0.blocks.0.norm1.weight", "stages.0.blocks.0.mixer.norm.weight"],
             ["stem.conv1.0.weight", "stages.0.blocks.0.cpe1.proj.weight", "stages.0.blocks.0.mixer.A_log",
              "stages.1.downsample.expand.weight"]),
    "spatial_mamba": (["stem.conv1.1.weight", "stem.residual.1.1.bias", "stem.proj.1.weight",  # official *.norm
                       "stages.1.downsample.norm.weight", "stages.0.blocks.0.mixer.out_norm.weight"],
                      ["stem.proj.0.weight", "stages.1.downsample.proj.weight", "stages.0.blocks.0.norm1.weight",
                       "stages.2.blocks.0.norm2.bias",                                 # official ln_1, ln_2
                       "stages.0.blocks.0.mixer.state_fusion.alpha", "stages.0.blocks.0.mixer.A_log"]),
    "efficient_vmamba": (["stages.0.blocks.0.norm.weight", "stages.0.blocks.0.mixer.out_norm.weight",
                          "stages.1.blocks.0.bi_attn.norm.bias",                            # official se.norm
                          "stages.1.downsample.norm.weight"],
                         ["stem.norm.weight",                                               # official patch_embed.2
                          "stages.0.blocks.0.conv_branch.1.weight", "stages.2.blocks.0.bn1.weight",  # conv_pw.1
                          "stages.0.blocks.0.mixer.A_log"]),
}


@pytest.mark.parametrize("path", sorted(PAPER_CONFIGS))
def test_configs_carry_the_official_recipes(path):
    model_name, drop_path, lr, weight_decay, per_gpu, schedule = PAPER_CONFIGS[path]
    cfg = Config.fromfile(ROOT / path)
    backbone = cfg.model.backbone
    assert backbone.type == "VisualSSMBackbone" and backbone.model_name == model_name
    rate = backbone.get("drop_path_rate")  # None: the model's own rate, which is the official one
    assert rate is None or rate == pytest.approx(drop_path)
    url = timm.models.get_pretrained_cfg(f"{model_name}.in1k").url
    checkpoint = backbone.init_cfg.checkpoint if backbone.init_cfg else None
    # the official release's URL; where it has no direct link (Google Drive), a local file or none until set
    assert checkpoint == url if url else checkpoint is None or checkpoint.endswith(".pth")
    assert cfg.custom_imports == dict(imports=["vmamba_zoo.mm"], allow_failed_imports=False)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ("AdamW", lr, weight_decay)
    assert cfg.train_dataloader.batch_size == per_gpu
    if cfg.default_scope == "mmdet":
        assert cfg.train_cfg.max_epochs == schedule and cfg.model.type in ("MaskRCNN", "RetinaNet")
    else:
        assert cfg.train_cfg.max_iters == schedule and cfg.model.decode_head.type == "UPerHead"
        assert cfg.model.decode_head.num_classes == 150 and cfg.crop_size == (512, 512)
    family = family_module(model_name)
    if family.__name__.rpartition(".")[2] not in DECAY_CHECKS or "paramwise_cfg" not in cfg.optim_wrapper:
        return  # below: the norm names of the families whose official recipes exempt norms by name
    # no weight decay exactly where the official backbone's parameter names contain 'norm'
    init_default_scope(cfg.default_scope)
    tiny = Config(dict(cfg.to_dict()))
    tiny.model.backbone.update(model_kwargs=family.TINY_KWARGS, init_cfg=None)
    channels = list(VisualSSMBackbone(model_name=model_name, model_kwargs=family.TINY_KWARGS).channels)
    tiny.model.get("neck", tiny.model.get("decode_head")).in_channels = channels
    if cfg.default_scope == "mmseg":
        tiny.model.auxiliary_head.in_channels = channels[2]
    model = (MMDET_MODELS if cfg.default_scope == "mmdet" else MMSEG_MODELS).build(tiny.model)
    groups = _build_optim_wrapper(model, tiny).optimizer.param_groups
    decay = {name: group["weight_decay"] for name, param in model.named_parameters()
             for group in groups if any(p is param for p in group["params"])}
    no_decay, decayed = DECAY_CHECKS[family.__name__.rpartition(".")[2]]
    for name in no_decay:
        assert decay[f"backbone.model.{name}"] == 0.0, name
    for name in decayed:
        assert decay[f"backbone.model.{name}"] == weight_decay, name
    assert decay["backbone.outnorm3.bias"] == 0.0


def test_convert_an_official_detector_checkpoint_for_load_from(tmp_path):
    import convert_checkpoint
    config = str(ROOT / "configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py")
    cfg = Config.fromfile(config)
    init_default_scope("mmdet")
    cfg.model.backbone.init_cfg = None
    detector = MMDET_MODELS.build(cfg.model)
    official = official_state_dict()
    state = {k: v for k, v in _official_detector_state(official).items() if k.startswith("backbone.")}
    state.update({k: torch.randn_like(v) for k, v in detector.state_dict().items() if not k.startswith("backbone.")})
    converted = convert_dense_state_dict({"state_dict": state}, detector.backbone)
    assert set(converted) == set(detector.state_dict())
    assert converted["neck.lateral_convs.0.conv.weight"] is state["neck.lateral_convs.0.conv.weight"]
    torch.testing.assert_close(converted["backbone.model.stages.0.blocks.1.mixer.D"], official["layers.0.blocks.1.op.Ds"])
    # the tool writes an mmengine checkpoint that loads strictly
    source, target = tmp_path / "official_mask_rcnn.pth", tmp_path / "converted.pth"
    torch.save({"meta": {}, "state_dict": state}, source)
    assert convert_checkpoint.main(["--mm-config", config, "--input", str(source), "--output", str(target)]) == 0
    detector.load_state_dict(torch.load(target, weights_only=True)["state_dict"], strict=True)
    torch.testing.assert_close(detector.backbone.outnorm3.bias, state["backbone.outnorm3.bias"])
    del state["neck.fpn_convs.0.conv.bias"]
    torch.save({"meta": {}, "state_dict": state}, source)
    assert convert_checkpoint.main(["--mm-config", config, "--input", str(source), "--output", str(target)]) == 1


# ---- tools ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["configs/mmdet/toy/mask-rcnn_vmamba-t-mini_fpn_toy-shapes.py",
                                    "configs/mmseg/toy/upernet_vmamba-t-mini_toy-shapes-128x128.py"])
def test_train_tool_writes_a_checkpoint_that_the_test_tool_loads(config, toy_data, tmp_path):
    scope = "mmdet" if "mmdet" in config else "mmseg"
    data = toy_data / ("coco" if scope == "mmdet" else "ade")
    options = [f"data_root={data}/", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
               "default_hooks.checkpoint.interval=2", "param_scheduler.0.end=1", "randomness.seed=0",
               f"train_dataloader.dataset.data_root={data}", f"val_dataloader.dataset.data_root={data}",
               f"test_dataloader.dataset.data_root={data}", "train_dataloader.batch_size=2"]
    if scope == "mmdet":
        options += [f"val_evaluator.ann_file={data}/annotations/instances_val.json",
                    f"test_evaluator.ann_file={data}/annotations/instances_val.json"]
    work_dir = tmp_path / "work"
    assert train_tool.main([config, "--work-dir", str(work_dir), "--cfg-options", *options]) == 0
    checkpoint = work_dir / "iter_2.pth"
    assert checkpoint.exists()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    runner = test_tool.build_runner([config, str(checkpoint), "--work-dir", str(tmp_path / "test"),
                                     "--cfg-options", *options])
    metrics = runner.test()
    loaded = runner.model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    if scope == "mmdet":
        assert {"coco/bbox_mAP", "coco/segm_mAP"} <= set(metrics)
    else:
        assert "mIoU" in metrics
    # --resume continues from the latest checkpoint in the work dir
    more = [o for o in options if not o.startswith("train_cfg.max_iters")] + ["train_cfg.max_iters=3"]
    assert train_tool.main([config, "--work-dir", str(work_dir), "--resume", "--cfg-options", *more]) == 0
    log = sorted(work_dir.rglob("*.log"))[-1].read_text()
    assert re.search(r"resumed epoch: \d+, iter: 2", log)


def test_build_model_from_config_names_a_foreign_codebase(tmp_path):
    config = tmp_path / "classifier.py"
    config.write_text("default_scope = 'mmpretrain'\nmodel = dict(type='ImageClassifier')\n")
    with pytest.raises(ValueError, match="default_scope 'mmpretrain' is neither mmdet nor mmseg"):
        vmamba_zoo.mm.build_model_from_config(str(config))


def test_flops_tool_counts_a_whole_detector(capsys):
    config = "configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py"
    options = dict(model=dict(backbone=dict(model_kwargs=MINI), neck=dict(in_channels=list(MINI["dims"]))))
    result = flops.config_complexity(str(ROOT / config), shape=(128, 96), cfg_options=options)
    assert set(result["parts"]) == {"backbone", "neck", "rpn_head", "roi_head"}
    assert result["params"] == sum(params for params, _ in result["parts"].values())
    # the backbone part is counted by the zoo's rules: the same as counting the backbone alone
    from vmamba_zoo.profiling import count_flops
    backbone = VisualSSMBackbone(model_name="vmamba_tiny", model_kwargs=MINI)
    assert result["parts"]["backbone"][1] == count_flops(backbone, (3, 128, 96))
    assert result["parts"]["roi_head"][1] > 0
    assert flops.main(["--config", str(ROOT / "configs/mmseg/toy/upernet_vmamba-t-mini_toy-shapes-128x128.py"),
                       "--shape", "64", "128"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"@ 64x128 \(mmseg\): params \d+\.\d+ M, GFLOPs \d+\.\d", out)
    assert re.search(r"decode_head +params", out) and re.search(r"auxiliary_head +params", out)


def test_flops_tool_writes_a_results_file(tmp_path, capsys):
    """--configs: one row per config counted, beside the config's own `paper` numbers; other rows are kept."""
    results = tmp_path / "dense.csv"
    det, seg = ("configs/mmdet/toy/mask-rcnn_vmamba-t-mini_fpn_toy-shapes.py",
                "configs/mmseg/toy/upernet_vmamba-t-mini_toy-shapes-128x128.py")
    kept = dict.fromkeys(flops.RESULT_FIELDS, "")
    kept.update(config=seg, model="vmamba_tiny", input="64x64", params="1", params_m="0.00", gflops="0.1")
    flops.write_results({seg: dict(kept)}, results)
    assert flops.main(["--configs", str(ROOT / det), "--shape", "64", "64", "--results-file", str(results)]) == 0
    rows = flops.read_results(results)
    assert list(rows) == [det, seg] and rows[seg] == kept
    row = rows[det]
    assert row["model"] == "vmamba_tiny" and row["input"] == "64x64" and float(row["gflops"]) > 0
    assert row["paper_params_m"] == row["params_diff_pct"] == ""  # a toy config has no paper numbers
    assert f"{det}: params {row['params_m']} M (-%), GFLOPs {row['gflops']} (-%)" in capsys.readouterr().out


def test_paper_numbers_are_the_config_files_own(tmp_path):
    base = tmp_path / "base.py"
    base.write_text("paper = dict(params_m=50, gflops=271, note='base')\nmodel = dict(type='X')\n")
    child = tmp_path / "child.py"
    child.write_text("_base_ = ['./base.py']\nmodel = dict(type='Y')\n")
    assert flops.paper_numbers(base) == dict(params_m=50, gflops=271, note="base")
    assert flops.paper_numbers(child) == {}  # not inherited: a child config is another model
    assert Config.fromfile(base).paper.gflops == 271  # mmengine takes the extra top-level key as it is
    bad = tmp_path / "bad.py"
    bad.write_text("paper = {'params_m': 50}\n")
    with pytest.raises(ValueError, match="must be a dict"):
        flops.paper_numbers(bad)


def test_dense_complexity_results_cover_every_paper_config():
    """results/dense_complexity.csv (tools/flops.py --configs, minutes a config on a CPU) has a row for every
    paper config under configs/, with the parameters of the model that config builds now and the paper columns
    of the config file. Built on the meta device (no weights): about a second a model."""
    from vmamba_zoo.profiling import count_params
    rows = flops.read_results(flops.RESULTS_FILE)
    missing = sorted(set(flops.paper_configs()) - set(rows))
    assert not missing, f"not in {flops.RESULTS_FILE.name} (run tools/flops.py --configs ...): {missing}"
    assert sorted(rows) == flops.paper_configs()
    params = {}
    for config, row in rows.items():
        cfg = Config.fromfile(ROOT / config)
        key = flops.model_key(cfg)
        if key not in params:
            init_default_scope(cfg.default_scope)
            registry = MMDET_MODELS if cfg.default_scope == "mmdet" else MMSEG_MODELS
            try:
                with torch.device("meta"):
                    params[key] = count_params(registry.build(cfg.model))
            except NotImplementedError:  # a constructor that reads tensor values: build it for real
                params[key] = count_params(registry.build(cfg.model))
        assert int(row["params"]) == params[key], config
        assert row["model"] == cfg.model.backbone.model_name
        expected = flops.paper_columns(ROOT / config, int(row["params"]), float(row["gflops"]))
        assert {k: row[k] for k in expected} == {k: str(v) for k, v in expected.items()}, config


def test_toy_datasets_are_valid_coco_and_ade(toy_data):
    from pycocotools.coco import COCO
    import numpy as np
    from PIL import Image
    coco = COCO(str(toy_data / "coco/annotations/instances_train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(make_toy_datasets.SHAPES)
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        rows, cols = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert abs(cols.min() - x) <= 1 and abs(rows.min() - y) <= 1 and abs(cols.max() + 1 - (x + w)) <= 1
    labels = np.asarray(Image.open(sorted((toy_data / "ade/annotations/training").glob("*.png"))[0]))
    assert set(np.unique(labels)) <= {1, 2, 3, 4} and 1 in labels
