# The CPU end-to-end check (README, "Detection and segmentation"): Mask R-CNN + FPN on the generated
# shapes of `python tools/make_toy_datasets.py` (data/toy/coco: circles, squares, triangles, 128x128),
# trained from scratch with the stock tools:
#
#   python tools/train.py configs/mmdet/toy/mask-rcnn_vmamba-t-mini_fpn_toy-shapes.py
#
# The backbone is vmamba_tiny's architecture at a quarter of the width and depth (dims 24..192,
# depths 1-1-2-1), the FPN and heads narrowed to match; everything else (RPN, RoIAlign, NMS, COCO
# box / mask AP) is the detector of the 1x config.
_base_ = ['../mask-rcnn_vmamba-t_fpn_1x_coco.py']

data_root = 'data/toy/coco/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
image_size = (128, 128)
max_iters = 600

model = dict(
    backbone=dict(
        model_kwargs=dict(dims=(24, 48, 96, 192), depths=(1, 1, 2, 1)),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[24, 48, 96, 192], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# from scratch, so a higher lr than fine-tuning's 1e-4; iterations instead of epochs
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=4)

# reproducible: the same initial weights and data order on every run
randomness = dict(seed=0)
