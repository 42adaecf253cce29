# The CPU end-to-end check (README, "Detection and segmentation"): UperNet on the generated ADE-style
# shapes of `python tools/make_toy_datasets.py` (data/toy/ade: ground, circle, square, triangle),
# trained from scratch with the stock tools:
#
#   python tools/train.py configs/mmseg/toy/upernet_vmamba-t-mini_toy-shapes-128x128.py
#
# The backbone is vmamba_tiny's architecture at a quarter of the width and depth (dims 24..192,
# depths 1-1-2-1), the heads narrowed to match; data pipeline, loss, whole-image inference and the
# mIoU metric are those of the ADE20K recipe.
_base_ = ['../upernet_vmamba-t_8xb2-160k_ade20k-512x512.py']

data_root = 'data/toy/ade'
metainfo = dict(classes=('ground', 'circle', 'square', 'triangle'),
                palette=[[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50]])
crop_size = (128, 128)
max_iters = 2000

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        model_kwargs=dict(dims=(24, 48, 96, 192), depths=(1, 1, 2, 1)),
        drop_path_rate=0.0,
        init_cfg=None),
    decode_head=dict(in_channels=[24, 48, 96, 192], channels=64, num_classes=4),
    auxiliary_head=dict(in_channels=96, channels=32, num_classes=4))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# ADE20K's layout and label convention, our own classes (ADE20KDataset accepts only subsets of its 150)
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
               seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

# from scratch, so a higher lr than fine-tuning's 6e-5
optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters),
    visualization=dict(draw=False))

# reproducible: the same initial weights and data order on every run
randomness = dict(seed=0)
