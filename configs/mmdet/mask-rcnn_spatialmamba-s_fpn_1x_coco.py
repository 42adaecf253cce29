# Mask R-CNN + FPN with Spatial-Mamba-S, 1x schedule: the Spatial-Mamba-T recipe with the small model
# (official detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_small.py); drop path 0.3.
_base_ = ['./mask-rcnn_spatialmamba-t_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=49.2, mask_ap=44.0, params_m=63, gflops=315)

pretrained = None  # the official spatialmamba_small checkpoint file (see the tiny config)

model = dict(
    backbone=dict(model_name='spatialmamba_small',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None))
