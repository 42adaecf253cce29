# Mask R-CNN + FPN with VMamba-B, 1x schedule: the VMamba-T recipe with the base model
# (official detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_base.py); drop path 0.6.
_base_ = ['./mask-rcnn_vmamba-t_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=49.2, mask_ap=44.1, params_m=108, gflops=485)

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa

model = dict(
    backbone=dict(model_name='vmamba_base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
