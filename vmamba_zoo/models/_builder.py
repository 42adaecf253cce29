"""Building a zoo model through timm: the shared builder (a clear message when pretrained weights cannot be
downloaded), the shared ``pretrained_cfg`` and the official linear-layer initialisation."""
from __future__ import annotations

import http.client
import urllib.error

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from torch import nn

from ..layers import cast_weights_once

#: what a failed download raises (no network, DNS, refused, timed out, HTTP error)
_DOWNLOAD_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


class PretrainedDownloadError(OSError):
    """``pretrained=True`` could not download the weights; the message names the URL and the offline route."""


def _url(variant: str, kwargs) -> str:
    """The URL timm downloads for ``variant`` given the pretrained_cfg arguments (as build_model_with_cfg resolves it)."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    return getattr(cfg, "url", None) or "(no URL in the model's pretrained_cfg)"


def build_zoo_model(model_cls, variant: str, pretrained: bool = False, **kwargs):
    """timm's ``build_model_with_cfg``, its linear layers made :class:`~vmamba_zoo.layers.Linear` (weights cast for
    autocast once in inference); a failed download of the pretrained weights raises
    :class:`PretrainedDownloadError` naming the URL and how to load a local copy instead."""
    try:
        return cast_weights_once(build_model_with_cfg(model_cls, variant, pretrained, **kwargs))
    except _DOWNLOAD_ERRORS as err:
        if not pretrained:
            raise
        url = _url(variant, kwargs)
        raise PretrainedDownloadError(
            f"could not download the pretrained weights of {variant} from {url} ({err}). Offline, fetch that "
            f"file elsewhere and load it from disk: timm.create_model({variant!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='/path/to/{url.rpartition('/')[2] or 'checkpoint.pth'}'))") from err


def create_zoo_model(model_cls, variant: str, pretrained: bool, checkpoint_filter_fn, out_indices=(0, 1, 2, 3),
                     **kwargs):
    """A zoo model through :func:`build_zoo_model`: pretrained weights pass the family's converter
    (official checkpoints load), and ``features_only`` returns the stages (or blocks) ``out_indices``."""
    return build_zoo_model(model_cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                           feature_cfg=dict(feature_cls="getter", out_indices=out_indices), **kwargs)


def zoo_cfg(url: str = "", *, first_conv: str, license: str, paper_ids: str, origin_url: str,
            classifier="head.fc", pool_size=(7, 7), **kwargs) -> dict:
    """A zoo model's timm ``pretrained_cfg``: every family's official evaluation setting (ImageNet-1k at 224²,
    crop 0.875, bicubic, ImageNet mean and std) and its checkpoint URL, license and paper. ``custom_load``:
    official files also pickle their training configuration (see ``load_checkpoint_file``)."""
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": pool_size,
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv, "classifier": classifier, "license": license,
        "paper_ids": paper_ids, "origin_url": origin_url, "custom_load": True, **kwargs,
    }


def init_linear(m: nn.Module):
    """The official families' initialisation of every linear layer: truncated normal (std 0.02), zero bias."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
