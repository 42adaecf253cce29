# UperNet with VMamba-S, 160k iterations on ADE20K, 512x512: the VMamba-T recipe with the small model
# (official segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_small.py); drop path 0.3.
_base_ = ['./upernet_vmamba-t_8xb2-160k_ade20k-512x512.py']

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=50.6, miou_ms=51.2, params_m=82, gflops=1028)

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa

model = dict(
    backbone=dict(model_name='vmamba_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
