# Mask R-CNN + FPN with VSSD-Small, 3x schedule (36 epochs) with multi-scale training and
# random crops, COCO instance segmentation.
#
# The official VSSD recipe (none in the official repository (its README reports small 3x and links the 1x checkpoint); the micro / tiny 3x recipe with small's backbone): Swin-T's ms-crop-3x recipe with the backbone swapped. AdamW lr 1e-4,
# weight decay 0.05 (none on the norms), batch 16 (8 GPUs x 2), warmup 1000 iterations, lr x0.1 after
# epochs 27 and 33; shorter side 480..800 (DETR-style resize / crop); drop path 0.4 (the model's own default).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=50.0, mask_ap=44.6, params_m=59, gflops=325)

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/YuhengSSS/VSSD/resolve/main/vssd_small_best_ema.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='vssd_small',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))

# As the official recipe (Swin's): no weight decay for parameters whose name contains 'norm'. The official
# backbone's stem BatchNorms are called patch_embed.conv*.norm (no decay); ours are stem.<conv>.1, hence
# the explicit keys.
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'norm': dict(decay_mult=0.0),
            'stem.conv1.1.': dict(decay_mult=0.0),
            'stem.residual.0.1.': dict(decay_mult=0.0),
            'stem.residual.1.1.': dict(decay_mult=0.0),
            'stem.conv2.1.': dict(decay_mult=0.0),
            'stem.proj.1.': dict(decay_mult=0.0),
        }))
