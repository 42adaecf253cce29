"""The official implementations of the zoo's families, built from their own checkouts for side-by-side runs.

``tools/benchmark.py --official`` measures, beside each zoo model, the official model it reproduces
(``PUBLISHED[name]['official_name']``), built by the official code from a checkout of the official
repository. Nothing official is vendored here: point ``--official-root DIR`` (or ``OFFICIAL_ROOT``) at a
directory that holds the checkouts, one per family, named as the repository (``DIR/VMamba``) or as our
family module (``DIR/vmamba``), or at one checkout itself. Compile the official CUDA kernels there
first (each repository's own instructions), or the official code runs its slow PyTorch fallback.

Adding a family: one entry in ``SOURCES`` below, keyed by the family module's name: the file of the
checkout that defines the model, and a builder ``(module, official_name) -> nn.Module``. When the
official file registers its models as functions (timm's ``@register_model``, as VMamba's does),
``call_registered`` is the builder; otherwise write a small one that calls the official class with
the published hyper-parameters.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from torch import nn

from vmamba_zoo.models import PUBLISHED, family_module


class OfficialUnavailable(RuntimeError):
    """The official implementation of a model cannot be built on this machine (the message says why)."""


def call_registered(module, official_name: str) -> nn.Module:
    """Build by calling the official file's registration function of that name (timm style)."""
    builder = getattr(module, official_name, None)
    if builder is None:
        raise OfficialUnavailable(f"{module.__file__} defines no {official_name}()")
    return builder()


@dataclass(frozen=True)
class OfficialSource:
    """Where a family's official model lives in its checkout and how it is built."""
    file: str                                        # path inside the checkout, e.g. "vmamba.py"
    build: Callable[[object, str], nn.Module] = call_registered


#: family module name -> its official source. Families without an entry are reported as "no builder yet".
SOURCES = {
    # github.com/MzeroMiko/VMamba: the self-contained root vmamba.py registers vmamba_tiny_s1l8, ... with timm
    "vmamba": OfficialSource(file="vmamba.py"),
}


def _repo_name(family) -> str:
    return getattr(family, "CARD", {}).get("code", "").rstrip("/").rpartition("/")[2]


def find_checkout(model_name: str, root) -> Path:
    """The official checkout of ``model_name``'s family under ``root`` (raises if there is none)."""
    family = family_module(model_name)
    short = family.__name__.rpartition(".")[2]
    source = SOURCES.get(short)
    if source is None:
        raise OfficialUnavailable(f"no official builder for the {short} family yet (tools/official_models.py SOURCES)")
    if not root:
        raise OfficialUnavailable("no official checkout: pass --official-root DIR or set OFFICIAL_ROOT")
    root = Path(root)
    candidates = [root / name for name in (_repo_name(family), short) if name] + [root]
    for directory in candidates:
        if (directory / source.file).is_file():
            return directory
    raise OfficialUnavailable(f"no {source.file} in {', '.join(str(c) for c in candidates)}")


def build_official(model_name: str, root: Optional[str] = None) -> nn.Module:
    """The official model that ``model_name`` reproduces, built by the official code of the checkout.

    ``root`` defaults to the ``OFFICIAL_ROOT`` environment variable. Raises :class:`OfficialUnavailable`
    saying why when the checkout, the builder or one of the official code's imports is missing.
    """
    root = root if root is not None else os.environ.get("OFFICIAL_ROOT")
    checkout = find_checkout(model_name, root)
    family = family_module(model_name).__name__.rpartition(".")[2]
    source = SOURCES[family]
    official_name = PUBLISHED[model_name]["official_name"]
    # a module name of its own, so that the official timm registrations do not join our family's listing
    module_name = f"official_{family}"
    module = sys.modules.get(module_name)
    if module is None:
        path = checkout / source.file
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(checkout))
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # an import the machine lacks (a CUDA extension, a package): skip, saying which
            del sys.modules[module_name]
            raise OfficialUnavailable(f"{path} does not import: {type(err).__name__}: {err}") from err
        finally:
            sys.path.remove(str(checkout))
    return source.build(module, official_name)
