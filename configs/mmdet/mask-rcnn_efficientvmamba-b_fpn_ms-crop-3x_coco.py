# Mask R-CNN + FPN with EfficientVMamba-B, 3x schedule (36 epochs) with multi-scale training and random
# crops, COCO instance segmentation.
#
# The official recipe (configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_2292_96.py, written for B): Swin-T's
# ms-crop-3x recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the norms), batch 16,
# warmup 1000 iterations, lr x0.1 after epochs 27 and 33; shorter side 480..800 (DETR-style resize / crop);
# drop path 0.2 (Swin's backbone setting, which the official backbone inherits; the model's own default).
# The official configs train in fp16 (AmpOptimWrapper; add --cfg-options optim_wrapper.type=AmpOptimWrapper).
# The official config sets 4 images per GPU on 4 GPUs (16 per iteration either way).
# Ours (tools/flops.py --config this): 53.22M params, 252.4 GFLOPs at 1280x800 (backbone 32.95M / 81.4G, neck 2.73M
# / 53.1G, RPN 0.59M / 50.6G, RoI heads 16.95M / 67.3G).
paper = dict(
    box_ap=45.0, mask_ap=40.8, params_m=53, gflops=252)

# the mask-rcnn_efficientvmamba-t_fpn_ms-crop-3x_coco recipe (see its header) with the base backbone and its widths
_base_ = './mask-rcnn_efficientvmamba-t_fpn_ms-crop-3x_coco.py'

# ImageNet-1k weights of the official release: huggingface.co/TerryPei/EfficientVMamba-Base, no direct file URL
# in the official README; download the checkpoint here under this name (it is converted on load)
pretrained = 'checkpoints/efficient_vmamba_base.pth'

model = dict(
    backbone=dict(model_name='efficientvmamba_base', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
