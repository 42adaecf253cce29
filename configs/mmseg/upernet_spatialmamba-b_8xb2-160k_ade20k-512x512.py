# UperNet with Spatial-Mamba-B, 160k iterations on ADE20K, 512x512: the Spatial-Mamba-T recipe with the
# base model (official segmentation/configs/spatialmamba/upernet_spatialmamba_4xb4-160k_ade20k-512x512_base.py);
# drop path 0.5.
_base_ = ['./upernet_spatialmamba-t_8xb2-160k_ade20k-512x512.py']

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=51.8, miou_ms=52.6, params_m=127, gflops=1176)

pretrained = None  # the official spatialmamba_base checkpoint file (see the tiny config)

model = dict(
    backbone=dict(model_name='spatialmamba_base',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
