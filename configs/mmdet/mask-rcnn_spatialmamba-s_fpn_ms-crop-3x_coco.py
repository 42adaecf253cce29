# Mask R-CNN + FPN with Spatial-Mamba-S, 3x multi-scale + crop schedule: the Spatial-Mamba-T 3x recipe
# with the small model (official detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_small_3x.py);
# drop path 0.3.
# Paper: box AP 50.5, mask AP 44.6; 63M params, 315 GFLOPs.
_base_ = ['./mask-rcnn_spatialmamba-t_fpn_ms-crop-3x_coco.py']

pretrained = None  # the official spatialmamba_small checkpoint file (see the tiny 1x config)

model = dict(
    backbone=dict(model_name='spatialmamba_small',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None))
