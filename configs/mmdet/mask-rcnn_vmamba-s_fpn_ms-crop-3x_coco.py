# Mask R-CNN + FPN with VMamba-S, 3x multi-scale + crop schedule: the VMamba-T 3x recipe with the
# small model (official detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_small_ms_3x.py); drop path 0.3.
_base_ = ['./mask-rcnn_vmamba-t_fpn_ms-crop-3x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=49.9, mask_ap=44.2, params_m=70, gflops=349,
             note="GFLOPs: the paper's; the official README prints 384G")

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa

model = dict(
    backbone=dict(model_name='vmamba_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
