# The GPU check of the distributed path (README, "Several GPUs"): the full Mask R-CNN 1x recipe with
# VMamba-T (1333x800 inputs, 2 images per GPU, AdamW 1e-4) on the generated shapes of
# `python tools/make_toy_datasets.py`, since COCO is not on the lent machines:
#
#   bash tools/dist_train.sh configs/mmdet/toy/mask-rcnn_vmamba-t_fpn_1x_toy-shapes.py 2
#
# Only the data, the class count and the schedule (iterations instead of epochs) differ from
# ../mask-rcnn_vmamba-t_fpn_1x_coco.py; the backbone starts from random weights (nothing is
# downloaded there).
_base_ = ['../mask-rcnn_vmamba-t_fpn_1x_coco.py']

data_root = 'data/toy/coco/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
max_iters = 60

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)))

train_dataloader = dict(
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/')))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=max_iters)]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
