# UperNet with VSSD-Micro, 160k iterations on ADE20K, 512x512 crops.
#
# The official VSSD recipe (none in the official repository (its README reports the micro result); the tiny recipe with micro's backbone, drop path 0.1 as micro's detection configs), which is Swin-T's UperNet recipe with the backbone swapped:
# AdamW lr 6e-5, weight decay 0.01 (none on the norms), linear warmup over 1500 iterations then poly
# decay to 0, 16 images per iteration (the file name says 4xb4; the config inherits 2 per GPU from
# Swin's 8xb2: 16 either way), ReLU heads (not in place). No layer-wise lr decay.
_base_ = [
    './_base_/models/upernet_vmamba.py', './_base_/datasets/ade20k.py',
    './_base_/default_runtime.py', './_base_/schedules/schedule_160k.py'
]

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=45.6, miou_ms=46.0, params_m=42, gflops=893)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/YuhengSSS/VSSD/resolve/main/vssd_micro_best.pth'  # noqa

model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='VisualSSMBackbone',
        model_name='vssd_micro',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[48, 96, 192, 384], num_classes=150, act_cfg=dict(type='ReLU', inplace=False)),
    auxiliary_head=dict(in_channels=192, num_classes=150, act_cfg=dict(type='ReLU', inplace=False)))

# As the official recipe (Swin's): no weight decay for parameters whose name contains 'norm' (ours: the
# stem's BatchNorms are stem.<conv>.1, hence the explicit keys).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.0),
            'stem.conv1.1.': dict(decay_mult=0.0),
            'stem.residual.0.1.': dict(decay_mult=0.0),
            'stem.residual.1.1.': dict(decay_mult=0.0),
            'stem.conv2.1.': dict(decay_mult=0.0),
            'stem.proj.1.': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
