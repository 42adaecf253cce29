# Mask R-CNN + FPN with MSVMamba-M, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official MSVMamba recipe (detection/configs/ms_vssm/mask_rcnn_ms_vssm_fpn_coco_micro.py): Swin-T's
# Mask R-CNN 1x recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the norms),
# batch 16 (8 GPUs x 2 images), linear warmup over 1000 iterations, lr x0.1 after epochs 8 and 11,
# single-scale 1333x800 training; drop path 0.2 (Swin's backbone setting, which the official backbone
# inherits; the model's own default). No layer-wise lr decay.
# The mask-rcnn_msvmamba-t_fpn_1x_coco recipe (see its header) with the micro backbone.
_base_ = ['./mask-rcnn_msvmamba-t_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=43.8, mask_ap=39.9, params_m=32, gflops=201)

# ImageNet-1k weights of the official release: a Google Drive folder (official README), no direct URL;
# download vssm_micro_ms_e300.pth beside this file (it is converted on load)
pretrained = 'vssm_micro_ms_e300.pth'

model = dict(
    backbone=dict(model_name='msvmamba_micro', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
