# Mask R-CNN + FPN with VSSD-Micro, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official VSSD recipe (detection/configs/vssd/mask_rcnn_vssd_fpn_coco_micro.py): Swin-T's Mask R-CNN 1x
# recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the norms), batch 16
# (8 GPUs x 2 images), linear warmup over 1000 iterations, lr x0.1 after epochs 8 and 11, single-scale
# 1333x800 training; drop path 0.1 (set here: the classification model is registered with 0.2, see its card).
# The mask-rcnn_vssd-t_fpn_1x_coco recipe (see its header) with the micro backbone.
_base_ = ['./mask-rcnn_vssd-t_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=45.4, mask_ap=41.3, params_m=33, gflops=220)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/YuhengSSS/VSSD/resolve/main/vssd_micro_best.pth'  # noqa

model = dict(
    backbone=dict(model_name='vssd_micro', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[48, 96, 192, 384]))
