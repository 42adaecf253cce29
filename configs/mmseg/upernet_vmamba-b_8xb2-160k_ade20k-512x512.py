# UperNet with VMamba-B, 160k iterations on ADE20K, 512x512: the VMamba-T recipe with the base model
# (official segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_base.py); drop path 0.6.
_base_ = ['./upernet_vmamba-t_8xb2-160k_ade20k-512x512.py']

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=51.0, miou_ms=51.6, params_m=122, gflops=1170)

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa

model = dict(
    backbone=dict(model_name='vmamba_base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
