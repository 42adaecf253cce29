# UperNet with MSVMamba-M, 160k iterations on ADE20K, 512x512 crops.
#
# The official MSVMamba recipe (segmentation/configs/ms_vssm/upernet_ms_vssm_4xb4-160k_ade20k-512x512_micro.py),
# which is Swin-T's UperNet recipe with the backbone swapped: AdamW lr 6e-5, weight decay 0.01 (none on the
# norms), linear warmup over 1500 iterations then poly decay to 0, 16 images per iteration (the file name says
# 4xb4; the config inherits 2 per GPU from Swin's 8xb2), drop path 0.3 (Swin-T's UperNet setting, which the official backbone inherits). No layer-wise lr decay.
# The upernet_msvmamba-t_8xb2-160k_ade20k-512x512 recipe (see its header) with the micro backbone.
_base_ = ['./upernet_msvmamba-t_8xb2-160k_ade20k-512x512.py']

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=45.1, miou_ms=45.4, params_m=42, gflops=875)

# ImageNet-1k weights of the official release: a Google Drive folder (official README), no direct URL;
# download vssm_micro_ms_e300.pth beside this file (it is converted on load)
pretrained = 'vssm_micro_ms_e300.pth'

model = dict(
    backbone=dict(model_name='msvmamba_micro', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
