"""The official implementations of the zoo's families, built from their own checkouts for side-by-side runs.

``tools/benchmark.py --official`` measures, beside each zoo model, the official model it reproduces
(``PUBLISHED[name]['official_name']``), built by the official code from a checkout of the official
repository. Nothing official is vendored here: point ``--official-root DIR`` (or ``OFFICIAL_ROOT``) at a
directory that holds the checkouts, one per family, named as the repository (``DIR/VMamba``) or as our
family module (``DIR/vmamba``), or at one checkout itself.

Compile each repository's CUDA kernels in place first (``tools/build_official.py``: ``python setup.py
build_ext --inplace`` in the folders ``SOURCES`` names, with the fixes a current CUDA needs): without them
the official code silently runs its slow PyTorch fallback, so a family whose kernels do not import is
reported as unavailable rather than measured. The families' official code shares package and extension
names (``models``, ``selective_scan_cuda_core``), so one process holds one family's official code:
``benchmark.py`` measures each official model in a process of its own.

Adding a family: one entry in ``SOURCES``, keyed by the family module's name: the package folder to put
on ``sys.path`` and the module to import, the in-place kernel build folders and the extension names one of
which must load, and a builder ``(module, official_name, checkout) -> nn.Module``.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from torch import nn

from vmamba_zoo.models import PUBLISHED, family_module

#: the selective-scan extensions the official repositories build (mamba_ssm's is selective_scan_cuda)
SCAN_EXTENSIONS = ("selective_scan_cuda_oflex", "selective_scan_cuda_core", "selective_scan_cuda")


class OfficialUnavailable(RuntimeError):
    """The official implementation of a model cannot be built on this machine (the message says why)."""


def call_registered(module, official_name: str, checkout: Path) -> nn.Module:
    """Build by calling the official module's function of that name (timm style registrations)."""
    builder = getattr(module, official_name, None)
    if builder is None:
        raise OfficialUnavailable(f"{module.__file__} defines no {official_name}()")
    return builder()


def from_yaml(folder: str, name_to_file: Optional[dict] = None, builder: str = "build_model"):
    """A builder for the repositories configured by Swin-style yaml files (``config._C`` + ``models.<builder>``)."""
    def build(module, official_name: str, checkout: Path) -> nn.Module:
        config = importlib.import_module("config")
        file = (name_to_file or {}).get(official_name, f"{official_name}.yaml")
        cfg = config._C.clone()
        cfg.defrost()
        config._update_config_from_file(cfg, str(checkout / "classification" / folder / file))
        return getattr(module, builder)(cfg)
    return build


#: EfficientVMamba's published sizes (its small yaml builds embed 96, not the published 64): embed, depths
EFFICIENT_VMAMBA_SIZES = {"EfficientVMamba-T": (48, (2, 2, 4, 2)), "EfficientVMamba-S": (64, (2, 2, 4, 2)),
                          "EfficientVMamba-B": (96, (2, 2, 9, 2))}
#: Spatial-Mamba's published sizes: dims, depths, drop path (as its yaml files)
SPATIAL_MAMBA_SIZES = {"spatialmamba_tiny": (64, [2, 4, 8, 4], 0.2), "spatialmamba_small": (64, [2, 4, 21, 5], 0.3),
                       "spatialmamba_base": (96, [2, 4, 21, 5], 0.5)}


def efficient_vssm(module, official_name: str, checkout: Path) -> nn.Module:
    """EfficientVMamba's class with the published widths."""
    embed, depths = EFFICIENT_VMAMBA_SIZES[official_name]
    return module.EfficientVSSM(patch_size=4, in_chans=3, num_classes=1000, depths=list(depths), dims=embed,
                                d_state=16, dt_rank="auto", ssm_ratio=2.0, attn_drop_rate=0.0, shared_ssm=False,
                                softmax_version=False, drop_rate=0.0, drop_path_rate=0.2, mlp_ratio=0.0,
                                patch_norm=True, downsample_version="v1", use_checkpoint=False, window_size=2)


def spatial_mamba(module, official_name: str, checkout: Path) -> nn.Module:
    """Spatial-Mamba's class with the published widths and depths."""
    dims, depths, drop_path = SPATIAL_MAMBA_SIZES[official_name]
    return module.SpatialMamba(d_state=1, dims=dims, depths=depths, drop_path_rate=drop_path)


@dataclass(frozen=True)
class OfficialSource:
    """Where a family's official model lives in its checkout and how it is built."""
    module: str                                     # module to import, e.g. "models.vmamba"
    package_root: str = "classification"            # folder of the checkout put on sys.path
    build: Callable = call_registered
    kernel_dirs: tuple = ()                         # in-place build folders of its CUDA extensions
    kernels: tuple = ()                             # extension names, one of which must load


#: family module name -> its official source. Families without an entry are reported as "no builder yet".
SOURCES = {
    # github.com/MzeroMiko/VMamba: classification/models/vmamba.py registers vmamba_tiny_s1l8, ...
    "vmamba": OfficialSource("models.vmamba", kernel_dirs=("kernels/selective_scan",), kernels=SCAN_EXTENSIONS),
    "group_mamba": OfficialSource("models.groupmamba", kernel_dirs=("kernels/selective_scan",),
                                  kernels=SCAN_EXTENSIONS),
    "msvmamba": OfficialSource("models", build=from_yaml("configs/ms_vssm", {
        "vssm_nano_ms_e300": "vssm_nano_224_ms.yaml", "vssm_micro_ms_e300": "vssm_micro_224_ms.yaml",
        "vssm_tiny_ms_e300": "vssm_tiny_224_ms.yaml"}, "build_vssm_model"),
        kernel_dirs=("kernels/selective_scan",), kernels=SCAN_EXTENSIONS),
    # VSSD's released models are plain PyTorch (its mamba_ssm imports serve another path)
    "vssd": OfficialSource("models", build=from_yaml("configs/vssd", builder="build_vssd_model")),
    # EfficientVMamba imports its kernel as selective_scan_vmamba_pt202.selective_scan_cuda_core
    "efficient_vmamba": OfficialSource("models.vmamba_efficient", build=efficient_vssm,
                                       kernel_dirs=("selective_scan",), kernels=SCAN_EXTENSIONS),
    # its own selective scan (selective_scan_cuda_oflex_rh: returns the hidden states) and depthwise conv
    "spatial_mamba": OfficialSource("models", build=spatial_mamba,
                                    kernel_dirs=("kernels/selective_scan", "kernels/dwconv2d"),
                                    kernels=("selective_scan_cuda_oflex_rh",)),
    # models_mamba.py registers the long official names; its mamba_ssm fork and causal-conv1d are built in place
    "vim": OfficialSource("models_mamba", package_root="vim", kernel_dirs=("mamba-1p1p1", "causal-conv1d"),
                          kernels=("selective_scan_cuda",)),
}


def _repo_name(family) -> str:
    return getattr(family, "CARD", {}).get("code", "").rstrip("/").rpartition("/")[2]


def _family(model_name: str) -> str:
    return family_module(model_name).__name__.rpartition(".")[2]


def find_checkout(model_name: str, root) -> Path:
    """The official checkout of ``model_name``'s family under ``root`` (raises if there is none)."""
    short = _family(model_name)
    source = SOURCES.get(short)
    if source is None:
        raise OfficialUnavailable(f"no official builder for the {short} family yet (tools/official_models.py SOURCES)")
    if not root:
        raise OfficialUnavailable("no official checkout: pass --official-root DIR or set OFFICIAL_ROOT")
    root = Path(root)
    candidates = [root / name for name in (_repo_name(family_module(model_name)), short) if name] + [root]
    relative = Path(source.package_root, *source.module.split("."))
    for directory in candidates:
        if (directory / relative).is_dir() or (directory / relative).with_suffix(".py").is_file():
            return directory
    raise OfficialUnavailable(f"no {relative}.py in {', '.join(str(c) for c in candidates)}")


#: the family whose official code this process has imported (its package names would shadow another's)
_LOADED: dict = {}


def build_official(model_name: str, root: Optional[str] = None, require_kernels: bool = True) -> nn.Module:
    """The official model that ``model_name`` reproduces, built by the official code of the checkout.

    ``root`` defaults to the ``OFFICIAL_ROOT`` environment variable. Raises :class:`OfficialUnavailable`
    saying why when the checkout, the builder, one of the official code's imports or (``require_kernels``)
    its compiled CUDA kernels are missing, or when another family's official code is already loaded here.
    """
    root = root if root is not None else os.environ.get("OFFICIAL_ROOT")
    checkout = find_checkout(model_name, root)
    family = _family(model_name)
    source = SOURCES[family]
    if _LOADED and _LOADED["family"] != family:
        raise OfficialUnavailable(f"the official {_LOADED['family']} code is loaded in this process; the "
                                  f"official {family} code needs a process of its own")
    for folder in (source.package_root, *source.kernel_dirs):
        path = str(checkout / folder)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(source.module)
    except Exception as err:  # an import the machine lacks (a CUDA extension, a package): skip, saying which
        raise OfficialUnavailable(f"{checkout}: {source.module} does not import: {type(err).__name__}: {err}") from err
    _LOADED["family"] = family
    if require_kernels and source.kernels and not any(name in sys.modules for name in source.kernels):
        raise OfficialUnavailable(
            f"the official CUDA kernels are not built ({' / '.join(source.kernels)} did not import): the official "
            f"code would run its PyTorch fallback; build them in {', '.join(str(checkout / d) for d in source.kernel_dirs)}")
    return source.build(module, PUBLISHED[model_name]["official_name"], checkout)
