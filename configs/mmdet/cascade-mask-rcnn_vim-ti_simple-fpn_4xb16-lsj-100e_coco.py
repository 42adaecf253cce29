# Cascade Mask R-CNN with Vim-Ti and ViTDet's simple feature pyramid, 100 epochs of large-scale jitter,
# COCO instance segmentation.
#
# The official Vim recipe (hustvl/Vim det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vimdet_t_100ep_adj1.py,
# the one det/scripts/ft_vim_tiny_vimdet.sh runs; detectron2 LazyConfig on ViTDet's recipe):
# - backbone: the plain Vim-Ti without class token at 1024x1024 (position embedding at the 64x64 grid), the
#   2-D rotary embedding applied to the residual stream before every block (if_rope, if_rope_residual;
#   positions scaled by 14 / 64), one output: the residual stream after the last block plus the last mixer
#   output (last_layer_process='add'), no final norm; drop path 0.1;
# - neck: ViTDet's simple feature pyramid from that stride-16 map (SimpleFPN: deconvs to strides 4 and 8,
#   identity at 16, 2x2 max-pool to 32, each with 1x1 and 3x3 convs and LayerNorm, 256 channels; P6 by a
#   stride-2 max-pool); images padded to 1024x1024 (square_pad: pad_size_divisor=1024 below);
# - RPN with two 3x3 convs; three cascade stages of 4conv1fc box heads with LayerNorm (class-agnostic
#   regression, IoU 0.5 / 0.6 / 0.7), mask head with LayerNorm; mmdet's Cascade R-CNN losses and sampling;
# - AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.1 (none on LayerNorms and the position embedding;
#   Vim's RMSNorms and all biases decay, as detectron2's defaults have it), layer-wise lr decay 0.837:
#   block i gets lr x 0.837^(24 - i), patch and position embeddings x 0.837^25, neck and heads x 1;
# - 184,375 iterations of 64 images (= 100 epochs; 4 GPUs x 16), linear warmup over 250 iterations from
#   0.001, lr x 0.1 at iterations 163,889 and 177,546; large-scale jitter (resize 0.1-2.0 of 1024, 1024
#   crop, flip); test at the longer side 1024. The official trains with AMP (tools/train.py --amp).
# The official pretrained file is an unreleased Vim-Ti (rotary embedding, no class token); we start from the
# released Vim-Ti (middle class token; its position entry dropped, the patch grid interpolated 14 -> 64).
# Ours (tools/flops.py --config this, at 1280x800): 65.37M params; 2169.7 GFLOPs as mmdet's inference graph
# runs it (backbone 36.9, neck 52.7, the two-conv RPN 100.9, the three box heads on 1000 proposals 386.4,
# the three mask heads on all 1000 proposals 1592.6), 736.3 GFLOPs with the mask heads on 100 detections.
paper = dict(
    box_ap=45.7, mask_ap=39.2)

_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]

custom_imports = dict(imports=['vmamba_zoo.mm'], allow_failed_imports=False)

image_size = (1024, 1024)
# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/vim_t_midclstok_76p1acc.pth'  # noqa
head_norm_cfg = dict(type='LN2d', requires_grad=True)

model = dict(
    # ViTDet pads every image to 1024x1024 (all are at most that after LSJ / test resizing)
    data_preprocessor=dict(pad_size_divisor=1024),
    backbone=dict(
        _delete_=True,
        type='VimBackbone',
        model_name='vim_tiny',
        img_size=1024,
        out_indices=(23, ),
        feature='residual',
        rope=True,
        fpn=False,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        in_channels=[192],
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=[
            dict(
                type='Shared4Conv1FCBBoxHead',
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                norm_cfg=head_norm_cfg,
                roi_feat_size=7,
                num_classes=80,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
                reg_class_agnostic=True,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
        ],
        mask_head=dict(norm_cfg=head_norm_cfg)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# 4 GPUs x 16 images, iteration-based (no RepeatDataset)
train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 184375
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)

num_layers = 24
layer_decay = 0.837
custom_keys = {f'backbone.model.blocks.{i}.': dict(lr_mult=layer_decay**(num_layers - i)) for i in range(num_layers)}
custom_keys['backbone.model.patch_embed'] = dict(lr_mult=layer_decay**(num_layers + 1))
custom_keys['backbone.model.pos_embed'] = dict(lr_mult=layer_decay**(num_layers + 1), decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys=custom_keys))
auto_scale_lr = dict(base_batch_size=64)
