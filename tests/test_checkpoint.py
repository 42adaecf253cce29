"""Official-checkpoint conversion, on synthetic checkpoints built from the official key list."""
import re
import sys
import types
from pathlib import Path

import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the models)
from vmamba_zoo.models import CheckpointMismatchError, convert_official_state_dict, load_checkpoint_file

KEYS = Path(__file__).parent / "data" / "vmamba_tiny_keys.txt"
sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
import convert_checkpoint  # noqa: E402


def official_state_dict():
    """Random tensors under every key (and shape) of the official vmamba_tiny_s1l8 state dict."""
    state = {}
    for line in KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = re.match(r"(\S+) \(([\d, ]*)\)", line).groups()
        state[key] = torch.randn(*[int(s) for s in shape.split(",") if s.strip()])
    return state


def test_official_keys_load_strictly_and_land_where_they_belong():
    official = official_state_dict()
    assert len(official) == 276 and sum(t.numel() for t in official.values()) == 30_249_064
    model = timm.create_model("vmamba_tiny")
    converted = convert_official_state_dict(official, model)
    model.load_state_dict(converted, strict=True)
    ours = model.state_dict()
    pairs = {
        "patch_embed.0.weight": "stem.conv1.weight",
        "patch_embed.7.bias": "stem.norm2.bias",
        "layers.0.downsample.1.weight": "stages.1.downsample.conv.weight",
        "layers.2.downsample.3.bias": "stages.3.downsample.norm.bias",
        "layers.1.blocks.0.op.A_logs": "stages.1.blocks.0.mixer.A_log",
        "layers.3.blocks.1.op.Ds": "stages.3.blocks.1.mixer.D",
        "layers.2.blocks.7.op.dt_projs_bias": "stages.2.blocks.7.mixer.dt_bias",
        "layers.0.blocks.1.op.x_proj.weight": "stages.0.blocks.1.mixer.x_proj.weight",
        "layers.0.blocks.1.mlp.fc2.weight": "stages.0.blocks.1.mlp.fc2.weight",
        "classifier.norm.weight": "norm_pre.weight",
        "classifier.head.weight": "head.fc.weight",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], official[theirs])
    # dt_projs.weight (K*D, R) is our (K, D, R)
    torch.testing.assert_close(ours["stages.0.blocks.0.mixer.dt_proj_weight"].reshape(384, 6),
                               official["layers.0.blocks.0.op.dt_projs.weight"])


def test_older_official_layouts_are_accepted():
    official = official_state_dict()
    legacy = {}
    for key, value in official.items():
        if key.endswith("op.x_proj.weight"):  # stacked per direction: (K, R + 2N, D)
            legacy[key.replace("x_proj.weight", "x_proj_weight")] = value.view(4, -1, value.shape[1])
        elif key.endswith("op.dt_projs.weight"):  # (K, D, R)
            legacy[key.replace("dt_projs.weight", "dt_projs_weight")] = value.view(4, -1, value.shape[1])
        elif key.endswith("in_proj.weight"):  # conv-style 1x1 weight
            legacy[key] = value[:, :, None, None]
        else:
            legacy[key] = value
    wrapped = {"model": {f"module.{k}": v for k, v in legacy.items()}, "epoch": 264}
    model = timm.create_model("vmamba_tiny")
    model.load_state_dict(convert_official_state_dict(wrapped, model), strict=True)
    expected = timm.create_model("vmamba_tiny")
    expected.load_state_dict(convert_official_state_dict(official, expected))
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_mismatched_keys_are_all_listed():
    official = official_state_dict()
    del official["layers.0.blocks.0.op.Ds"]
    official["layers.9.blocks.0.op.extra"] = torch.zeros(3)
    official["layers.1.blocks.0.op.in_proj.weight"] = torch.zeros(191, 192)
    model = timm.create_model("vmamba_tiny")
    with pytest.raises(CheckpointMismatchError) as info:
        convert_official_state_dict(official, model)
    message = str(info.value)
    assert "stages.0.blocks.0.mixer.D" in message and "missing keys" in message
    assert "stages.9.blocks.0.mixer.extra" in message and "unexpected keys" in message
    assert "stages.1.blocks.0.mixer.in_proj.weight: checkpoint (191, 192) vs model (192, 192)" in message
    assert isinstance(info.value, ValueError)


def test_wrong_model_for_checkpoint():
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        convert_official_state_dict(official_state_dict(), timm.create_model("vmamba_small"))


@pytest.fixture
def official_file(tmp_path):
    """An official-format training checkpoint, with a pickled yacs-like config beside the weights."""
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode, yacs.config = CfgNode, config
    sys.modules.update({"yacs": yacs, "yacs.config": config})
    try:
        state = official_state_dict()
        path = tmp_path / "vssm1_tiny_0230s_ckpt_epoch_264.pth"
        torch.save({"model": state, "config": CfgNode(MODEL=CfgNode(NAME="vssm1_tiny_0230s")), "epoch": 264}, path)
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]
    return path, state


def test_checkpoint_file_with_pickled_config_loads_safely(official_file):
    path, state = official_file
    checkpoint = load_checkpoint_file(path)
    assert checkpoint["epoch"] == 264 and checkpoint["config"]["MODEL"]["NAME"] == "vssm1_tiny_0230s"
    torch.testing.assert_close(checkpoint["model"]["patch_embed.0.weight"], state["patch_embed.0.weight"])


def test_timm_pretrained_from_official_file(official_file):
    path, state = official_file
    official = dict(file=str(path), custom_load=True)  # custom_load: our loader reads the official format
    model = timm.create_model("vmamba_tiny", pretrained=True, pretrained_cfg_overlay=official)
    torch.testing.assert_close(model.head.fc.weight, state["classifier.head.weight"])
    other = timm.create_model("vmamba_tiny", pretrained=True, num_classes=10, in_chans=1,
                              pretrained_cfg_overlay=official)
    assert other.head.fc.out_features == 10
    torch.testing.assert_close(other.stem.conv1.weight, state["patch_embed.0.weight"].sum(1, keepdim=True))
    features = timm.create_model("vmamba_tiny", pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=official)
    torch.testing.assert_close(features.model.stages[2].blocks[7].mixer.A_log, state["layers.2.blocks.7.op.A_logs"])


def test_convert_checkpoint_tool(official_file, tmp_path, capsys):
    path, state = official_file
    out = tmp_path / "vmamba_tiny.in1k.pth"
    assert convert_checkpoint.main(["--model", "vmamba_tiny", "--input", str(path), "--output", str(out)]) == 0
    model = timm.create_model("vmamba_tiny")
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    torch.testing.assert_close(model.stages[1].downsample.conv.weight, state["layers.0.downsample.1.weight"])
    # a converted file loads through timm's plain file path
    loaded = timm.create_model("vmamba_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
    torch.testing.assert_close(loaded.stages[1].downsample.conv.weight, state["layers.0.downsample.1.weight"])
    # our own format goes through unchanged
    again = tmp_path / "again.safetensors"
    assert convert_checkpoint.main(["--model", "vmamba_tiny", "--input", str(out), "--output", str(again)]) == 0
    # a checkpoint of another model fails with the list of mismatches
    assert convert_checkpoint.main(["--model", "vmamba_small", "--input", str(path), "--output", str(again)]) == 1
    assert "shape mismatches" in capsys.readouterr().err


def _bad_checkpoints(tmp_path, good: Path):
    """Files that are not checkpoints: missing, empty, random bytes, a truncated real one (pth and safetensors)."""
    empty, noise, cut, cut_st = (tmp_path / n for n in ("empty.pth", "noise.pth", "cut.pth", "cut.safetensors"))
    empty.write_bytes(b"")
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
                      .numpy().tobytes())
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    from safetensors.torch import save_file
    save_file({"w": torch.randn(64, 64)}, str(cut_st))
    cut_st.write_bytes(cut_st.read_bytes()[:1000])
    return {"missing": tmp_path / "missing.pth", "empty": empty, "random bytes": noise, "truncated": cut,
            "truncated safetensors": cut_st}


def test_unreadable_checkpoint_files_say_so(official_file, tmp_path, capsys):
    """load_checkpoint_file and tools/convert_checkpoint.py name the file and stop, for every kind of bad file."""
    from vmamba_zoo.models import CheckpointReadError
    for kind, path in _bad_checkpoints(tmp_path, official_file[0]).items():
        with pytest.raises(CheckpointReadError, match=re.escape(f"{path} is not a readable PyTorch checkpoint")):
            load_checkpoint_file(path)
        assert convert_checkpoint.main(["--model", "vmamba_tiny", "--input", str(path),
                                        "--output", str(tmp_path / "out.pth")]) == 2, kind
        err = capsys.readouterr().err
        assert err.startswith(f"{path} is not a readable PyTorch checkpoint ("), (kind, err)
        assert "weights_only" not in err and "Traceback" not in err
    assert not (tmp_path / "out.pth").exists()
    with pytest.raises(CheckpointReadError, match=r"truncated or corrupt\?"):
        load_checkpoint_file(tmp_path / "noise.pth")


def test_pretrained_offline_names_the_url_and_the_local_file_route(monkeypatch):
    """No network: the error names the checkpoint URL and pretrained_cfg_overlay=dict(file=...)."""
    import urllib.error

    import timm.models._builder
    from vmamba_zoo.models import PretrainedDownloadError

    def unreachable(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(timm.models._builder, "download_cached_file", unreachable)
    with pytest.raises(PretrainedDownloadError) as info:
        timm.create_model("vmamba_tiny", pretrained=True, **vmamba_zoo.models.tiny_kwargs("vmamba_tiny"))
    message = str(info.value)
    assert timm.get_pretrained_cfg("vmamba_tiny").url in message
    assert "pretrained_cfg_overlay=dict(file='/path/to/vssm1_tiny_0230s_ckpt_epoch_264.pth')" in message


def test_unwrap_strips_every_module_prefix():
    """One 'module.' per DataParallel wrapper: training checkpoints saved from a doubly wrapped model load."""
    from vmamba_zoo.models._checkpoint import unwrap_state_dict
    tensor = torch.zeros(1)
    checkpoint = {"state_dict": {"module.module.stem.conv.weight": tensor, "module.head.fc.bias": tensor,
                                 "layers.0.module_x": tensor}}
    assert list(unwrap_state_dict(checkpoint)) == ["stem.conv.weight", "head.fc.bias", "layers.0.module_x"]
