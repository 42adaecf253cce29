# UperNet with Spatial-Mamba-S, 160k iterations on ADE20K, 512x512: the Spatial-Mamba-T recipe with the
# small model (official segmentation/configs/spatialmamba/upernet_spatialmamba_4xb4-160k_ade20k-512x512_small.py);
# drop path 0.3.
_base_ = ['./upernet_spatialmamba-t_8xb2-160k_ade20k-512x512.py']

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=50.6, miou_ms=51.4, params_m=73, gflops=992)

pretrained = None  # the official spatialmamba_small checkpoint file (see the tiny config)

model = dict(
    backbone=dict(model_name='spatialmamba_small',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None))
