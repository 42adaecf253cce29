# Mask R-CNN + FPN with VSSD-Small, 3x schedule (36 epochs) with multi-scale training and
# random crops, COCO instance segmentation.
#
# The official VSSD recipe (none in the official repository (its README reports small 3x and links the 1x checkpoint); the micro / tiny 3x recipe with small's backbone): Swin-T's ms-crop-3x recipe with the backbone swapped. AdamW lr 1e-4,
# weight decay 0.05 (none on the norms), batch 16 (8 GPUs x 2), warmup 1000 iterations, lr x0.1 after
# epochs 27 and 33; shorter side 480..800 (DETR-style resize / crop); drop path 0.4 (the model's own default).
# The mask-rcnn_vssd-t_fpn_ms-crop-3x_coco recipe (see its header) with the small backbone.
_base_ = ['./mask-rcnn_vssd-t_fpn_ms-crop-3x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=50.0, mask_ap=44.6, params_m=59, gflops=325)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/YuhengSSS/VSSD/resolve/main/vssd_small_best_ema.pth'  # noqa

model = dict(
    backbone=dict(model_name='vssd_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
