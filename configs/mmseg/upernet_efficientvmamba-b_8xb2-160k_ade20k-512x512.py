# UperNet with EfficientVMamba-B, 160k iterations on ADE20K, 512x512 crops.
#
# The paper (Table 4): "aligning with VMamba settings", UperNet, AdamW lr 6e-5, 160k iterations, batch 16; the
# official repository has no segmentation code or config. This is VMamba's official recipe (Swin-T's UperNet
# recipe with the backbone swapped): AdamW lr 6e-5, weight decay 0.01 (none on the norms), linear warmup over
# 1500 iterations then poly decay to 0, 16 images per iteration (8 GPUs x 2); drop path 0.2 (the model's own
# default, the rate of the paper's detection runs).
# Ours (tools/flops.py --config this): 65.37M params (backbone 32.95M, decode head 31.50M, auxiliary head 0.92M),
# 929.6 GFLOPs at 512x2048.
paper = dict(
    miou=46.5, miou_ms=47.3, params_m=65, gflops=930)

# the upernet_efficientvmamba-t_8xb2-160k_ade20k-512x512 recipe (see its header) with the base backbone and its widths
_base_ = './upernet_efficientvmamba-t_8xb2-160k_ade20k-512x512.py'

# ImageNet-1k weights of the official release: huggingface.co/TerryPei/EfficientVMamba-Base, no direct file URL
# in the official README; download the checkpoint here under this name (it is converted on load)
pretrained = 'checkpoints/efficient_vmamba_base.pth'

model = dict(
    backbone=dict(model_name='efficientvmamba_base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], channels=512),
    auxiliary_head=dict(in_channels=384))
