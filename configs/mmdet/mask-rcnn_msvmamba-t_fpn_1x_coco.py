# Mask R-CNN + FPN with MSVMamba-T, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official MSVMamba recipe (detection/configs/ms_vssm/mask_rcnn_ms_vssm_fpn_coco_tiny.py): Swin-T's
# Mask R-CNN 1x recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the norms),
# batch 16 (8 GPUs x 2 images), linear warmup over 1000 iterations, lr x0.1 after epochs 8 and 11,
# single-scale 1333x800 training; drop path 0.2 (Swin's backbone setting, which the official backbone
# inherits; the model's own default). No layer-wise lr decay.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(
    box_ap=46.9, mask_ap=42.2, params_m=53, gflops=252,
    note="GFLOPs: the official README's 252G is not what the official counting script gives for this detector: "
         "its own record (analyze/get_flops.py, at 1280x800) is 52.553M params, 264.95 GFLOPs; ours 265.1")

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

# ImageNet-1k weights of the official release: a Google Drive folder (official README), no direct URL;
# download vssm_tiny_ms_e300.pth beside this file (it is converted on load)
pretrained = 'vssm_tiny_ms_e300.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='msvmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

# As the official recipe (Swin's): no weight decay for parameters whose name contains 'norm'. The official
# backbone names its stem LayerNorm by position (patch_embed.2), so that one decays; ours is stem.norm, hence
# the explicit key (the longest matching key wins). Its patch-merging norms are called 'norm' too: no decay.
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'backbone.model.stem': dict(decay_mult=1.0),
            'norm': dict(decay_mult=0.0),
        }))
