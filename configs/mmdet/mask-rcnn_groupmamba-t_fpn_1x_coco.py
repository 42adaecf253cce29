# Mask R-CNN + FPN with GroupMamba-T, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official repository has released no detection code; the paper reports GroupMamba-T with Mask R-CNN
# 1x (box AP 47.6, mask AP 42.9). This config uses the recipe of our VMamba-T one (VMamba's official
# recipe: Swin-T's Mask R-CNN 1x with the backbone swapped): AdamW lr 1e-4, weight decay 0.05 (none
# on norms), batch 16 (8 GPUs x 2 images), linear warmup over 1000 iterations, lr x0.1 after epochs 8
# and 11, single-scale 1333x800 training; drop path 0.05 (the model's own default, its ImageNet rate).
# Params and GFLOPs: tools/flops.py --config this.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=47.6, mask_ap=42.9)

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

# ImageNet-1k weights of the official release (Google Drive file 1TrYYs0uGZbja_2ONQLyfiNdp8C5ZYP1o, no
# direct URL): download it here; it is converted on load.
pretrained = 'checkpoints/groupmamba_tiny.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='groupmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 348, 448]))

# No weight decay on norms (LayerNorm, GroupNorm; their 1-D weights are exempt in the official
# classification recipe too).
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, custom_keys={'norm': dict(decay_mult=0.0)}))
