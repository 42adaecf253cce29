# Mask R-CNN + FPN with VMamba-T, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official VMamba recipe (detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_tiny.py): Swin-T's
# Mask R-CNN 1x recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the
# blocks' norms), batch 16 (8 GPUs x 2 images), linear warmup over 1000 iterations, lr x0.1 after
# epochs 8 and 11, single-scale 1333x800 training; drop path 0.2 (the model's own default).
# No layer-wise lr decay (the official recipe uses none).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=47.3, mask_ap=42.7, params_m=50, gflops=271)

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='vmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

# As the official recipe: no weight decay for parameters whose name contains 'norm'. The official
# backbone names its stem and downsampling LayerNorms by position (patch_embed.2, downsample.3), so
# those do decay; ours are called stem.norm* and downsample.norm, hence the two explicit keys (the
# longest matching key wins).
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'backbone.model.stem': dict(decay_mult=1.0),
            'downsample': dict(decay_mult=1.0),
            'norm': dict(decay_mult=0.0),
        }))
