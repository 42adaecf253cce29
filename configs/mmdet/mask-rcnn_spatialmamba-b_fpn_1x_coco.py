# Mask R-CNN + FPN with Spatial-Mamba-B, 1x schedule: the Spatial-Mamba-T recipe with the base model
# (official detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_base.py); drop path 0.5.
# Paper: box AP 50.4, mask AP 45.1; 115M params, 494 GFLOPs.
_base_ = ['./mask-rcnn_spatialmamba-t_fpn_1x_coco.py']

pretrained = None  # the official spatialmamba_base checkpoint file (see the tiny config)

model = dict(
    backbone=dict(model_name='spatialmamba_base',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    neck=dict(in_channels=[96, 192, 384, 768]))
