# Mask R-CNN + FPN with EfficientVMamba-S, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official recipe (detection/configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_*.py): Swin-T's Mask R-CNN 1x
# recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the norms), batch 16 (8 GPUs x 2
# images), linear warmup over 1000 iterations, lr x0.1 after epochs 8 and 11, single-scale 1333x800 training;
# drop path 0.2 (Swin's backbone setting, which the official backbone inherits; the model's own default).
# The official configs train in fp16 (AmpOptimWrapper; add --cfg-options optim_wrapper.type=AmpOptimWrapper).
# For S: configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_2242_96.py (2 images per GPU).
# efficientvmamba_small is the published EfficientVMamba-S (embed 64, 11M params); the official repository's
# small yaml and its detection config (configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_2242_96.py) build
# embed 96, which is model_kwargs=dict(embed_dim=96) here (24.0M-parameter backbone); the paper's detector and
# segmentor sizes are those of embed 64 (its Mask R-CNN: 31M; here 30.9M with embed 64, 44.3M with 96).
# Ours (tools/flops.py --config this): 30.91M params, 197.4 GFLOPs at 1280x800 (backbone 10.76M / 27.4G, neck 2.61M
# / 52.1G, RPN 0.59M / 50.6G, RoI heads 16.95M / 67.3G).
paper = dict(
    box_ap=39.3, mask_ap=36.7, params_m=31, gflops=197)

# the mask-rcnn_efficientvmamba-t_fpn_1x_coco recipe (see its header) with the small backbone and its widths
_base_ = './mask-rcnn_efficientvmamba-t_fpn_1x_coco.py'

# ImageNet-1k weights of the official release: huggingface.co/TerryPei/EfficientVMamba-Small, no direct file URL
# in the official README; download the checkpoint here under this name (it is converted on load)
pretrained = 'checkpoints/efficient_vmamba_small.pth'

model = dict(
    backbone=dict(model_name='efficientvmamba_small', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
