# UperNet with EfficientVMamba-S, 160k iterations on ADE20K, 512x512 crops.
#
# The paper (Table 4): "aligning with VMamba settings", UperNet, AdamW lr 6e-5, 160k iterations, batch 16; the
# official repository has no segmentation code or config. This is VMamba's official recipe (Swin-T's UperNet
# recipe with the backbone swapped): AdamW lr 6e-5, weight decay 0.01 (none on the norms), linear warmup over
# 1500 iterations then poly decay to 0, 16 images per iteration (8 GPUs x 2); drop path 0.2 (the model's own
# default, the rate of the paper's detection runs).
# efficientvmamba_small is the published EfficientVMamba-S (embed 64, 11M params); the official repository's
# small yaml and its detection config (configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_2242_96.py) build
# embed 96, which is model_kwargs=dict(embed_dim=96) here (24.0M-parameter backbone); the paper's detector and
# segmentor sizes are those of embed 64 (its Mask R-CNN: 31M; here 30.9M with embed 64, 44.3M with 96).
#
# Decoder width, which the paper does not state: the standard UperNet (512 channels, VMamba's) would make this model
# 41.1M params; the paper's 29M params, 505 GFLOPs are those of UperNet with 384 channels
# (decode_head.channels; the FCN auxiliary head keeps its 256), which this config therefore uses.
# Ours (tools/flops.py --config this): 28.78M params (backbone 10.76M, decode head 17.39M, auxiliary head 0.63M),
# 504.5 GFLOPs at 512x2048.
paper = dict(
    miou=41.5, miou_ms=42.1, params_m=29, gflops=505)

# the upernet_efficientvmamba-t_8xb2-160k_ade20k-512x512 recipe (see its header) with the small backbone and its widths
_base_ = './upernet_efficientvmamba-t_8xb2-160k_ade20k-512x512.py'

# ImageNet-1k weights of the official release: huggingface.co/TerryPei/EfficientVMamba-Small, no direct file URL
# in the official README; download the checkpoint here under this name (it is converted on load)
pretrained = 'checkpoints/efficient_vmamba_small.pth'

model = dict(
    backbone=dict(model_name='efficientvmamba_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512], channels=384),
    auxiliary_head=dict(in_channels=256))
