# UperNet with GroupMamba-T, 160k iterations on ADE20K, 512x512 crops.
#
# The official repository has released no segmentation code; the paper reports GroupMamba-T with UperNet
# (mIoU 48.6 single scale / 49.2 multi-scale). This config uses the recipe of our VMamba-T one (VMamba's
# official recipe: Swin-T's UperNet with the backbone swapped): AdamW lr 6e-5, weight decay 0.01 (none on norms), linear
# warmup over 1500 iterations then poly decay to 0, 16 images per iteration (8 GPUs x 2); drop path 0.05
# (the model's own default, its ImageNet rate). Params and GFLOPs: tools/flops.py --config this.
_base_ = [
    './_base_/models/upernet_vmamba.py', './_base_/datasets/ade20k.py',
    './_base_/default_runtime.py', './_base_/schedules/schedule_160k.py'
]

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=48.6, miou_ms=49.2)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)

# ImageNet-1k weights of the official release (Google Drive file 1TrYYs0uGZbja_2ONQLyfiNdp8C5ZYP1o, no
# direct URL): download it here; it is converted on load.
pretrained = 'checkpoints/groupmamba_tiny.pth'

model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='VisualSSMBackbone',
        model_name='groupmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 348, 448], num_classes=150),
    auxiliary_head=dict(in_channels=348, num_classes=150))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
