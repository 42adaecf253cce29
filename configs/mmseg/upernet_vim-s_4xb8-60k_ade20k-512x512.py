# UperNet with Vim-S, 60k iterations on ADE20K, 512x512 crops.
#
# The official Vim recipe (hustvl/Vim seg/configs/vim/upernet/upernet_vim_small_24_512_slide_60k.py, run by
# seg/scripts/ft_vim_small_upernet.sh, which overrides lr, the layer decay and the features):
# - backbone: the plain Vim-S with its class token deleted, the residual stream after blocks 5, 11, 17, 23
#   (use_residual_as_feature=True; the last is the stream plus the last mixer output, last_layer_process=
#   'add'), the 2-D rotary embedding applied to the stream before every block (if_rope, if_rope_residual;
#   positions scaled by 14 / 32), drop path 0.1 (VisionMamba's default), position embedding at the 32x32
#   grid of 512x512; the four stride-16 maps made strides 4 / 8 / 16 / 32 by deconv-SyncBN-GELU-deconv /
#   deconv / identity / 2x2 max-pool (VimBackbone(fpn=True));
# - UperNet with channels 384 (= the embedding width, not mmseg's 512), FCN auxiliary head on the
#   third map, SyncBN in the heads;
# - AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, none on 1-D parameters (norms, biases, D, dt
#   bias); linear warmup over 1500 iterations from 1e-6, then poly decay (power 1) to 0; 60k iterations
#   of 32 images (4 GPUs x 8); fp32 (the official AMP runner runs with use_fp16=False);
# - layer-wise lr decay 0.95 over 24 layers, as the official BEiT-style constructor applies it: it assigns
#   layers by the name 'backbone.blocks.<i>', which Vim's blocks (backbone.layers.<i>) do not have, so only
#   the patch and position embeddings (layer 0) get lr x 0.95^25 and everything else lr x 1; reproduced
#   exactly with custom_keys below (the position embedding does decay there: the official no-decay rule
#   tests the unprefixed name 'pos_embed');
# - slide inference with 512x512 windows at stride 341 on images resized to 2048x512 (keep ratio).
# The released Vim-S classifier was trained without the rotary embedding; the official recipe adds it at
# fine-tuning (its pretrained-vim-s.pth is not published).
# Ours (tools/flops.py --config this, at 512x2048): 45.45M params, 622.8 GFLOPs (backbone 137.3, decode
# head 485.5); the paper gives no FLOPs.
paper = dict(
    miou=44.9, params_m=46)

# The upernet_vim-ti_4xb8-60k_ade20k-512x512 recipe (see its header) with what differs for Vim-S.
_base_ = ['./upernet_vim-ti_4xb8-60k_ade20k-512x512.py']

# ImageNet-1k weights of the official release (converted on load)
pretrained = 'https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/vim_s_midclstok_80p5acc.pth'  # noqa

model = dict(
    backbone=dict(model_name='vim_small', feature='residual', rope=True,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=384),
    auxiliary_head=dict(in_channels=384))

layer_decay = 0.95 ** 25  # the official constructor's scale of layer 0 (24 layers + 2)
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'backbone.model.pos_embed': dict(lr_mult=layer_decay),
            'backbone.model.patch_embed.proj.weight': dict(lr_mult=layer_decay),
            'backbone.model.patch_embed.proj.bias': dict(lr_mult=layer_decay, decay_mult=0.0),
        }))
