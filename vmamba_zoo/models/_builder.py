"""Building a zoo model through timm, with a clear message when its pretrained weights cannot be downloaded."""
from __future__ import annotations

import http.client
import urllib.error

from timm.models import build_model_with_cfg, resolve_pretrained_cfg

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
    """timm's ``build_model_with_cfg``; a failed download of the pretrained weights raises
    :class:`PretrainedDownloadError` naming the URL and how to load a local copy instead."""
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except _DOWNLOAD_ERRORS as err:
        if not pretrained:
            raise
        url = _url(variant, kwargs)
        raise PretrainedDownloadError(
            f"could not download the pretrained weights of {variant} from {url} ({err}). Offline, fetch that "
            f"file elsewhere and load it from disk: timm.create_model({variant!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='/path/to/{url.rpartition('/')[2] or 'checkpoint.pth'}'))") from err
