# Mask R-CNN + FPN with EfficientVMamba-T, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official recipe (detection/configs/efficient/mask_rcnn_vssm_fpn_coco_efficient_*.py): Swin-T's Mask R-CNN 1x
# recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the norms), batch 16 (8 GPUs x 2
# images), linear warmup over 1000 iterations, lr x0.1 after epochs 8 and 11, single-scale 1333x800 training;
# drop path 0.2 (Swin's backbone setting, which the official backbone inherits; the model's own default).
# The official configs train in fp16 (AmpOptimWrapper; add --cfg-options optim_wrapper.type=AmpOptimWrapper).
# The official detection folder has no working EfficientVMamba-T config: configs/efficient/
# mask_rcnn_vssm_fpn_coco_efficient_2242_48.py builds embed 48 with depths (2, 2, 9, 2) (T has 2, 2, 4, 2) and
# keeps Swin's FPN input channels (96, 192, 384, 768), which a 48-wide backbone does not give, so it does not
# build; it sets 4 images per GPU on 4 GPUs.
# Ours (tools/flops.py --config this): 26.20M params, 186.0 GFLOPs at 1280x800 (backbone 6.11M / 16.4G, neck 2.55M /
# 51.6G, RPN 0.59M / 50.6G, RoI heads 16.95M / 67.3G).
# The paper's 11M / 60G for T cannot be a Mask R-CNN with FPN: its neck and heads alone are 20.1M params
# and 169.5 GFLOPs here (the same table gives 31M / 207G for ResNet-18); S and B, with the same neck
# and heads, match the paper within 1%.
paper = dict(
    box_ap=35.6, mask_ap=33.2, params_m=11, gflops=60,
    note="the paper's 11M / 60G cannot be a Mask R-CNN with FPN: its neck and heads alone are 20.1M / 169.5G")

_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

# ImageNet-1k weights of the official release: huggingface.co/TerryPei/EfficientVMamba-Tiny, no direct file URL
# in the official README; download the checkpoint here under this name (it is converted on load)
pretrained = 'checkpoints/efficient_vmamba_tiny.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='efficientvmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[48, 96, 192, 384]))

# As the official recipe (Swin's): no weight decay for parameters whose name contains 'norm' (the blocks' norms,
# the mixers' out_norm, BiAttn's norm, the patch-merging norms, the output norms). The official backbone names its
# stem LayerNorm by position (patch_embed.2), so that one decays; ours is stem.norm, hence the explicit key (the
# longest matching key wins). The batch norms (conv branch, inverted residuals) decay in both.
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'backbone.model.stem': dict(decay_mult=1.0),
            'norm': dict(decay_mult=0.0),
        }))
