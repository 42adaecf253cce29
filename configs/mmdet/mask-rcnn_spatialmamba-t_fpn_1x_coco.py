# Mask R-CNN + FPN with Spatial-Mamba-T, 1x schedule (12 epochs), COCO instance segmentation.
#
# The official Spatial-Mamba recipe (detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_tiny.py):
# Swin-T's Mask R-CNN 1x recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none on the
# backbone parameters whose official names contain 'norm'), batch 16 (8 GPUs x 2 images), linear warmup
# over 1000 iterations, lr x0.1 after epochs 8 and 11, single-scale 1333x800 training; drop path 0.2 (the
# model's own default). No layer-wise lr decay.
#
# ImageNet-1k weights: the official checkpoints are Google Drive files with no direct link (the official
# README; vmamba_zoo.models.PUBLISHED['spatialmamba_tiny']['checkpoint']). Download one and set `pretrained`
# to its path (converted on load); left None, the backbone starts from random weights.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=47.6, mask_ap=42.9, params_m=46, gflops=261)

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

pretrained = None

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='spatialmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    neck=dict(in_channels=[64, 128, 256, 512]))

# As the official recipe: no weight decay for the backbone parameters whose official name contains 'norm':
# the stem's and the downsamples' BatchNorms (ours: stem.*.1, downsample.norm), the mixers' out_norm and
# the output norms; the blocks' pre-norms are called ln_1 / ln_2 there and do decay (ours: norm1, norm2).
# mmengine applies the longest matching key.
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'backbone.model.stem.conv1.1': dict(decay_mult=0.0),
            'backbone.model.stem.residual.0.1': dict(decay_mult=0.0),
            'backbone.model.stem.residual.1.1': dict(decay_mult=0.0),
            'backbone.model.stem.conv2.1': dict(decay_mult=0.0),
            'backbone.model.stem.proj.1': dict(decay_mult=0.0),
            '.norm1.': dict(decay_mult=1.0),
            '.norm2.': dict(decay_mult=1.0),
            'norm': dict(decay_mult=0.0),
        }))
