# Mask R-CNN + FPN with VMamba-S, 1x schedule: the VMamba-T recipe with the small model
# (official detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_small.py); drop path 0.3.
# Paper: box AP 48.7, mask AP 43.7; 70M params, 349 GFLOPs (the paper's table; the design spec's
# 384G is a typo).
_base_ = ['./mask-rcnn_vmamba-t_fpn_1x_coco.py']

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa

model = dict(
    backbone=dict(model_name='vmamba_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
