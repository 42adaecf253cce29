# UperNet with VMamba-T, 160k iterations on ADE20K, 512x512 crops.
#
# The official VMamba recipe (segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py),
# which is Swin-T's UperNet recipe with the backbone swapped: AdamW lr 6e-5, weight decay 0.01 (none
# on the blocks' norms), linear warmup over 1500 iterations then poly decay to 0, 16 images per
# iteration (the official file name says 4xb4; the config it runs inherits 2 per GPU from Swin's 8xb2:
# 16 either way), drop path 0.2 (the model's own default). No layer-wise lr decay.
#
# The base configs are our own (configs/mmseg/_base_, the same settings as mmsegmentation's): the
# onedl-mmengine release maps `mmseg::` to a distribution called `mmsegmentation`, which the
# maintained fork (onedl-mmsegmentation) is not, so mmsegmentation's packaged configs cannot be
# inherited by name.
_base_ = [
    './_base_/models/upernet_vmamba.py', './_base_/datasets/ade20k.py',
    './_base_/default_runtime.py', './_base_/schedules/schedule_160k.py'
]

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=47.9, miou_ms=48.8, params_m=62, gflops=949)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth'  # noqa

model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='VisualSSMBackbone',
        model_name='vmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

# As the official recipe: no weight decay for parameters whose name contains 'norm'. The official
# backbone names its stem and downsampling LayerNorms by position (patch_embed.2, downsample.3), so
# those do decay; ours are called stem.norm* and downsample.norm, hence the two explicit keys (the
# longest matching key wins).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'backbone.model.stem': dict(decay_mult=1.0),
            'downsample': dict(decay_mult=1.0),
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
