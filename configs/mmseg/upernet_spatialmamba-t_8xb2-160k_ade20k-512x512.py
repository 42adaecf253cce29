# UperNet with Spatial-Mamba-T, 160k iterations on ADE20K, 512x512 crops.
#
# The official Spatial-Mamba recipe (segmentation/configs/spatialmamba/upernet_spatialmamba_4xb4-160k_ade20k-512x512_tiny.py),
# which is Swin-T's UperNet recipe with the backbone swapped: AdamW lr 6e-5, weight decay 0.01 (none on the
# backbone parameters whose official names contain 'norm'), linear warmup over 1500 iterations then poly
# decay to 0, 2 images per GPU (the official file name says 4xb4; the config it runs inherits 2 per GPU
# from Swin's 8xb2, its batch_size=4 line commented out), drop path 0.2 (the model's own default). No
# layer-wise lr decay.
#
# ImageNet-1k weights: the official checkpoints are Google Drive files with no direct link (the official
# README; vmamba_zoo.models.PUBLISHED['spatialmamba_tiny']['checkpoint']). Download one and set `pretrained`
# to its path (converted on load); left None, the backbone starts from random weights.
_base_ = [
    './_base_/models/upernet_vmamba.py', './_base_/datasets/ade20k.py',
    './_base_/default_runtime.py', './_base_/schedules/schedule_160k.py'
]

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=48.6, miou_ms=49.4, params_m=57, gflops=936)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)

pretrained = None

model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='VisualSSMBackbone',
        model_name='spatialmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))

# As the official recipe: no weight decay for the backbone parameters whose official name contains 'norm':
# the stem's and the downsamples' BatchNorms (ours: stem.*.1, downsample.norm), the mixers' out_norm and
# the output norms; the blocks' pre-norms are called ln_1 / ln_2 there and do decay (ours: norm1, norm2).
# mmengine applies the longest matching key.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
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
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
