# Mask R-CNN + FPN with Spatial-Mamba-S, 3x multi-scale + crop schedule: the Spatial-Mamba-T 3x recipe
# with the small model (official detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_small_3x.py);
# drop path 0.3.
_base_ = ['./mask-rcnn_spatialmamba-t_fpn_ms-crop-3x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=50.5, mask_ap=44.6, params_m=63, gflops=315)

pretrained = None  # the official spatialmamba_small checkpoint file (see the tiny 1x config)

model = dict(
    backbone=dict(model_name='spatialmamba_small',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None))
