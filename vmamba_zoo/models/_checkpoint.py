"""Loading official checkpoints: unwrap, rename keys by rules, reshape, and report every mismatch."""
from __future__ import annotations

import collections
import pickle
import re
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

#: a rule is (pattern, replacement): a regex replacement string, or a function of the match
Rule = Tuple[str, Union[str, Callable[[re.Match], str]]]

_CLASSIFIER = ("head.fc.weight", "head.fc.bias")

#: Official key -> ours for the shared layers of Spatial-Mamba and VSSD: their conv-BN stem (layers.ConvBNStem)
#: and inverted-bottleneck downsample (layers.ExpandDownsample), which the official models keep at the end of
#: stage i and ours opens stage i + 1 with.
CONV_BN_STEM_RULES = [
    (r"^patch_embed\.conv1\.conv\.", "stem.conv1.0."),
    (r"^patch_embed\.conv1\.norm\.", "stem.conv1.1."),
    (r"^patch_embed\.conv2\.(\d)\.conv\.", r"stem.residual.\1.0."),
    (r"^patch_embed\.conv2\.(\d)\.norm\.", r"stem.residual.\1.1."),
    (r"^patch_embed\.conv3\.0\.conv\.", "stem.conv2.0."),
    (r"^patch_embed\.conv3\.0\.norm\.", "stem.conv2.1."),
    (r"^patch_embed\.conv3\.1\.conv\.", "stem.proj.0."),
    (r"^patch_embed\.conv3\.1\.norm\.", "stem.proj.1."),
]
EXPAND_DOWNSAMPLE_RULES = [
    (r"^layers\.(\d+)\.downsample\.conv\.0\.conv\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.expand."),
    (r"^layers\.(\d+)\.downsample\.conv\.1\.conv\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.dwconv."),
    (r"^layers\.(\d+)\.downsample\.conv\.2\.conv\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.proj."),
    (r"^layers\.(\d+)\.downsample\.conv\.2\.norm\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.norm."),
]


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model; the message lists them all."""

    def __init__(self, model_name: str, missing: Sequence[str], unexpected: Sequence[str],
                 mis_shaped: Sequence[str]):
        self.missing, self.unexpected, self.mis_shaped = list(missing), list(unexpected), list(mis_shaped)
        lines = [f"checkpoint does not match {model_name}:"]
        for title, keys in (("missing keys (in the model, not in the checkpoint)", missing),
                            ("unexpected keys (in the checkpoint, not in the model)", unexpected),
                            ("shape mismatches", mis_shaped)):
            if keys:
                lines.append(f"  {title} [{len(keys)}]:")
                lines += [f"    {k}" for k in keys[:40]]
                if len(keys) > 40:
                    lines.append(f"    ... and {len(keys) - 40} more")
        super().__init__("\n".join(lines))


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read: missing, empty, truncated or not a checkpoint at all."""

    def __init__(self, path, reason: str = "truncated or corrupt?"):
        self.path = str(path)
        super().__init__(f"{path} is not a readable PyTorch checkpoint ({reason})")


def _inert(*args, **kwargs):
    return None


def load_checkpoint_file(path: Union[str, Path]) -> Mapping:
    """Read a checkpoint file safely (weights-only unpickling; ``.safetensors`` too).

    Official training checkpoints also pickle their training configuration (yacs ``CfgNode``,
    argparse ``Namespace``, ...). Such objects are read as plain ``OrderedDict``s (functions as
    no-ops) instead of failing, and no code from the file is ever run. A missing, empty, truncated or
    corrupt file raises :class:`CheckpointReadError` ("PATH is not a readable PyTorch checkpoint ...").
    """
    path = str(path)
    if not Path(path).is_file():
        raise CheckpointReadError(path, "no such file")
    if Path(path).stat().st_size == 0:
        raise CheckpointReadError(path, "empty file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types for a bad header or size
            raise CheckpointReadError(path) from err
    stand_ins = []
    for _ in range(32):
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            if not found:  # not a pickle of ours to repair: random bytes, a cut-off stream, ...
                raise CheckpointReadError(path) from err
            name = found[1]
            stand_in = collections.OrderedDict if name.rpartition(".")[2][:1].isupper() else _inert
            stand_ins.append((stand_in, name))
        except (RuntimeError, EOFError, ValueError, UnicodeDecodeError, KeyError, IndexError) as err:
            # torch's zip reader on a truncated archive, an unpickler running out of bytes, ...
            raise CheckpointReadError(path) from err
    raise CheckpointReadError(path, "too many unknown objects in the checkpoint")


def unwrap_state_dict(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint ('model', 'state_dict', 'module.' prefixes: one per
    DataParallel / DistributedDataParallel wrapper; EfficientVMamba's loader expects two)."""
    for key in ("model", "state_dict", "model_ema"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    return {re.sub(r"^(module\.)+", "", k): v for k, v in checkpoint.items()}


def _rename(key: str, rules: Iterable[Rule]) -> str:
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return key


def remap_checkpoint(state_dict: Mapping[str, torch.Tensor], model: nn.Module, rules: Sequence[Rule],
                     native_key: str, classifier_keys: Sequence[str] = _CLASSIFIER) -> Dict[str, torch.Tensor]:
    """Map an official-format state dict onto ``model``'s keys and shapes.

    Keys are renamed by the first matching rule; a tensor whose shape differs from the model's but has
    as many elements is reshaped (official checkpoints store some projections in other layouts). The
    classifier (``classifier_keys``) and the first conv are left alone (timm adapts them to other class counts and input
    channels). A state dict that already
    holds ``native_key`` is taken as ours and only checked. Raises :class:`CheckpointMismatchError`
    listing every missing, unexpected and mis-shaped key. ``classifier``: the model's classifier keys.
    """
    state_dict = unwrap_state_dict(state_dict)
    own = model.state_dict()
    if native_key not in state_dict:
        state_dict = {_rename(k, rules): v for k, v in state_dict.items()}
    # timm adapts these to the model's class count and input channels after filtering
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    adaptable = set(classifier_keys) | ({f"{first_conv}.weight"} if first_conv else set())
    out, mis_shaped = {}, []
    for key, value in state_dict.items():
        target = own.get(key)
        if target is not None and value.shape != target.shape and key not in adaptable:
            if value.numel() == target.numel():
                value = value.reshape(target.shape)
            else:
                mis_shaped.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}")
        out[key] = value
    missing = [k for k in own if k not in out and k not in classifier_keys]
    unexpected = [k for k in out if k not in own and k not in classifier_keys]
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatchError(type(model).__name__, missing, unexpected, mis_shaped)
    return out
