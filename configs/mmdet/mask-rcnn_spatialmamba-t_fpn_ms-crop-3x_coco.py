# Mask R-CNN + FPN with Spatial-Mamba-T, 3x schedule (36 epochs) with multi-scale training and random
# crops, COCO instance segmentation.
#
# The official Spatial-Mamba recipe (detection/configs/spatialmamba/mask_rcnn_spatialmamba_fpn_coco_tiny_3x.py):
# Swin-T's ms-crop-3x recipe with the backbone swapped. AdamW lr 1e-4, weight decay 0.05 (none where the
# official backbone's names contain 'norm'), batch 16 (8 GPUs x 2), warmup 1000 iterations, lr x0.1 after
# epochs 27 and 33; shorter side 480..800 (DETR-style resize / crop); drop path 0.2.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=49.3, mask_ap=43.6, params_m=46, gflops=261)

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

pretrained = None  # the official spatialmamba_tiny checkpoint file (see the 1x config)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='spatialmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    neck=dict(in_channels=[64, 128, 256, 512]))

# no weight decay where the official backbone's names contain 'norm' (see the 1x config)
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
