# Mask R-CNN + FPN with VMamba-T, 3x schedule (36 epochs) with multi-scale training and random
# crops, COCO instance segmentation.
#
# The official VMamba recipe (detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_tiny_ms_3x.py): Swin-T's
# ms-crop-3x recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the blocks'
# norms), batch 16 (8 GPUs x 2), warmup 1000 iterations, lr x0.1 after epochs 27 and 33; shorter side
# 480..800 (DETR-style resize / crop); drop path 0.2.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=48.8, mask_ap=43.7, params_m=50, gflops=271)

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='vmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

# no weight decay on the norms the official backbone names '*norm*' (see the 1x config)
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'backbone.model.stem': dict(decay_mult=1.0),
            'downsample': dict(decay_mult=1.0),
            'norm': dict(decay_mult=0.0),
        }))
