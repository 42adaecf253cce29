# Mask R-CNN + FPN with VMamba-S, 1x schedule: the VMamba-T recipe with the small model
# (official detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_small.py); drop path 0.3.
_base_ = ['./mask-rcnn_vmamba-t_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them). 349 GFLOPs: the paper's table; the official README prints 384.
paper = dict(box_ap=48.7, mask_ap=43.7, params_m=70, gflops=349,
             note="GFLOPs: the paper's; the official README prints 384G")

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa

model = dict(
    backbone=dict(model_name='vmamba_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
