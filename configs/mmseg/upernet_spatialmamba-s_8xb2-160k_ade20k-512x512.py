# UperNet with Spatial-Mamba-S, 160k iterations on ADE20K, 512x512: the Spatial-Mamba-T recipe with the
# small model (official segmentation/configs/spatialmamba/upernet_spatialmamba_4xb4-160k_ade20k-512x512_small.py);
# drop path 0.3.
# Paper: mIoU 50.6 (single scale) / 51.4 (multi-scale); 73M params, 992 GFLOPs.
_base_ = ['./upernet_spatialmamba-t_8xb2-160k_ade20k-512x512.py']

pretrained = None  # the official spatialmamba_small checkpoint file (see the tiny config)

model = dict(
    backbone=dict(model_name='spatialmamba_small',
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None))
