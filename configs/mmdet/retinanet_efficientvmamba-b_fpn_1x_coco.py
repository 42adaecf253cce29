# RetinaNet + FPN with EfficientVMamba-B, 1x schedule (12 epochs), COCO detection.
#
# The paper's RetinaNet results (Table 3) follow PVT's RetinaNet recipe (the paper: "we follow PvT to use
# RetinaNet as the detector and adopt 1x training schedule"); the official repository has no RetinaNet config.
# PVT's recipe is mmdetection's retinanet_pvt-t_fpn_1x_coco.py, inherited here with the backbone swapped: AdamW
# lr 1e-4, weight decay 1e-4 (on every parameter), batch 16 (8 GPUs x 2 images), linear warmup over 500
# iterations, lr x0.1 after epochs 8 and 11, single-scale 1333x800 training with random flips; FPN on the
# stride 8/16/32 maps with P6/P7 from the last backbone map; drop path 0.2 (the paper; the model's own default).
# The stride-4 map is not requested (PVT's config takes it and leaves it to the FPN's start_level=1; here its
# output norm would be a parameter without gradient, which distributed training refuses): the same detector.
# Ours (tools/flops.py --config this): 43.89M params, 233.4 GFLOPs at 1280x800 (backbone 32.95M / 81.4G, neck 4.47M
# / 14.3G, head 6.46M / 137.8G; the paper gives no FLOPs).
paper = dict(
    box_ap=42.8, params_m=44.0)

# the retinanet_efficientvmamba-t_fpn_1x_coco recipe (see its header) with the base backbone and its widths
_base_ = './retinanet_efficientvmamba-t_fpn_1x_coco.py'

# ImageNet-1k weights of the official release: huggingface.co/TerryPei/EfficientVMamba-Base, no direct file URL
# in the official README; download the checkpoint here under this name (it is converted on load)
pretrained = 'checkpoints/efficient_vmamba_base.pth'

model = dict(
    backbone=dict(model_name='efficientvmamba_base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
