# UperNet with VSSD-Micro, 160k iterations on ADE20K, 512x512 crops.
#
# The official VSSD recipe (none in the official repository (its README reports the micro result); the tiny recipe with micro's backbone, drop path 0.1 as micro's detection configs), which is Swin-T's UperNet recipe with the backbone swapped:
# AdamW lr 6e-5, weight decay 0.01 (none on the norms), linear warmup over 1500 iterations then poly
# decay to 0, 16 images per iteration (the file name says 4xb4; the config inherits 2 per GPU from
# Swin's 8xb2: 16 either way), ReLU heads (not in place). No layer-wise lr decay.
# The upernet_vssd-t_8xb2-160k_ade20k-512x512 recipe (see its header) with the micro backbone.
_base_ = ['./upernet_vssd-t_8xb2-160k_ade20k-512x512.py']

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=45.6, miou_ms=46.0, params_m=42, gflops=893)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/YuhengSSS/VSSD/resolve/main/vssd_micro_best.pth'  # noqa

model = dict(
    backbone=dict(model_name='vssd_micro', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[48, 96, 192, 384]),
    auxiliary_head=dict(in_channels=192))
