# Mask R-CNN + FPN with Spatial-Mamba-B, 1x schedule: the Spatial-Mamba-T recipe with the base model
# (official detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_base.py); drop path 0.5.
_base_ = ['./mask-rcnn_spatialmamba-t_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=50.4, mask_ap=45.1, params_m=115, gflops=494)

pretrained = None  # the official spatialmamba_base checkpoint file (see the tiny config)

model = dict(
    backbone=dict(model_name='spatialmamba_base',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    neck=dict(in_channels=[96, 192, 384, 768]))
