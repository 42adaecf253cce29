# Mask R-CNN + FPN with VSSD-Micro, 3x schedule (36 epochs) with multi-scale training and
# random crops, COCO instance segmentation.
#
# The official VSSD recipe (detection/configs/vssd/mask_rcnn_vssd_fpn_coco_micro_3x.py): Swin-T's ms-crop-3x recipe with the backbone swapped. AdamW lr 1e-4,
# weight decay 0.05 (none on the norms), batch 16 (8 GPUs x 2), warmup 1000 iterations, lr x0.1 after
# epochs 27 and 33; shorter side 480..800 (DETR-style resize / crop); drop path 0.1 (set here: the classification model is registered with 0.2, see its card).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']

# The paper's results for this config; params_m / gflops: the whole model at 1280x800 (tools/flops.py
# --configs compares its counts with them)
paper = dict(box_ap=47.7, mask_ap=42.8, params_m=33, gflops=220)

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/YuhengSSS/VSSD/resolve/main/vssd_micro_best.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisualSSMBackbone',
        model_name='vssd_micro',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[48, 96, 192, 384]))

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
