# Mask R-CNN + FPN with Spatial-Mamba-S, 1x schedule: the Spatial-Mamba-T recipe with the small model
# (official detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_small.py); drop path 0.3.
# Paper: box AP 49.2, mask AP 44.0; 63M params, 315 GFLOPs.
_base_ = ['./mask-rcnn_spatialmamba-t_fpn_1x_coco.py']

pretrained = None  # the official spatialmamba_small checkpoint file (see the tiny config)

model = dict(
    backbone=dict(model_name='spatialmamba_small',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None))
