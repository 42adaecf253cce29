# Mask R-CNN + FPN with VMamba-B, 1x schedule: the VMamba-T recipe with the base model
# (official detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_base.py); drop path 0.6.
# Paper: box AP 49.2, mask AP 44.1; 108M params, 485 GFLOPs. (The paper reports no 3x run for B.)
_base_ = ['./mask-rcnn_vmamba-t_fpn_1x_coco.py']

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa

model = dict(
    backbone=dict(model_name='vmamba_base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
