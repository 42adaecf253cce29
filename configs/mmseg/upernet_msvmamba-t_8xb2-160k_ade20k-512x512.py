# UperNet with MSVMamba-T, 160k iterations on ADE20K, 512x512 crops.
#
# The official MSVMamba recipe (segmentation/configs/ms_vssm/upernet_ms_vssm_4xb4-160k_ade20k-512x512_tiny.py),
# which is Swin-T's UperNet recipe with the backbone swapped: AdamW lr 6e-5, weight decay 0.01 (none on the
# norms), linear warmup over 1500 iterations then poly decay to 0, 16 images per iteration (the file name says
# 4xb4; the config inherits 2 per GPU from Swin's 8xb2), drop path 0.2 (set by the official config; the model's own default). No layer-wise lr decay.
_base_ = [
    './_base_/models/upernet_vmamba.py', './_base_/datasets/ade20k.py',
    './_base_/default_runtime.py', './_base_/schedules/schedule_160k.py'
]

# The paper's results for this config; params_m / gflops: the whole model at 512x2048 (tools/flops.py
# --configs compares its counts with them)
paper = dict(miou=47.8, params_m=65, gflops=942)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)

# ImageNet-1k weights of the official release: a Google Drive folder (official README), no direct URL;
# download vssm_tiny_ms_e300.pth beside this file (it is converted on load)
pretrained = 'vssm_tiny_ms_e300.pth'

model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='VisualSSMBackbone',
        model_name='msvmamba_tiny',
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

# As the official recipe (Swin's): no weight decay for parameters whose name contains 'norm'. The official
# backbone names its stem LayerNorm by position (patch_embed.2), so that one decays; ours is stem.norm, hence
# the explicit key (the longest matching key wins). Its patch-merging norms are called 'norm' too: no decay.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'backbone.model.stem': dict(decay_mult=1.0),
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
