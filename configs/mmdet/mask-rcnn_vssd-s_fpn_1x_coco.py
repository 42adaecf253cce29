# Mask R-CNN + FPN with VSSD-Small, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official VSSD recipe (detection/configs/vssd/mask_rcnn_vssd_fpn_coco_small.py): Swin-T's Mask R-CNN 1x
# recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the norms), batch 16
# (8 GPUs x 2 images), linear warmup over 1000 iterations, lr x0.1 after epochs 8 and 11, single-scale
# 1333x800 training; drop path 0.4 (the model's own default).
# The mask-rcnn_vssd-t_fpn_1x_coco recipe (see its header) with the small backbone.
_base_ = ['./mask-rcnn_vssd-t_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=48.4, mask_ap=43.5, params_m=59, gflops=325)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/YuhengSSS/VSSD/resolve/main/vssd_small_best_ema.pth'  # noqa

model = dict(
    backbone=dict(model_name='vssd_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
