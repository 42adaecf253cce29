"""Every zoo model in the ecosystem around timm: the timm model contract, torch.fx, TorchScript, ONNX, float64.

Parametrised over ``vmamba_zoo.list_models()``, each model built at its family's ``TINY_KWARGS`` widths
(a few channels, one block a stage), so that a family is covered the moment it is registered. Inputs
are 64x64 (or the ``img_size`` a family's TINY_KWARGS fixes). ONNX export takes tens of seconds a
model on CPU, so it runs on the smallest model of each family (the code path is the family's, the
sizes do not matter).
"""
import inspect
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import get_notrace_functions, get_notrace_modules
from timm.models import adapt_input_conv
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import ssm_kernels
import vmamba_zoo
from vmamba_zoo.layers import FastLayerNorm
from vmamba_zoo.models import FAMILIES, family_module, tiny_kwargs

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
import export_onnx  # noqa: E402

MODELS = vmamba_zoo.list_models()
#: the smallest model of each family (list_models orders each family smallest first)
ONE_PER_FAMILY = [next(n for n in MODELS if family_module(n).__name__.endswith("." + f)) for f in FAMILIES]
#: the pretrained_cfg keys timm's data pipeline and builders read
CFG_KEYS = ("url", "num_classes", "input_size", "crop_pct", "interpolation", "mean", "std", "first_conv",
            "classifier", "license")


def tiny(name, **kwargs):
    return timm.create_model(name, **{**tiny_kwargs(name), **kwargs})


def image(name, batch=2, chans=3):
    size = tiny_kwargs(name).get("img_size", 64)
    return torch.randn(batch, chans, size, size)


def fx_trace(model):
    """The model traced by torch.fx the way timm's tests and FX feature extraction trace it."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    nodes = train_nodes if model.training else eval_nodes
    return create_feature_extractor(model, {nodes[-1]: "out"})


# ---- the timm model contract -----------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_forward_and_every_parameter_gets_a_finite_gradient(name):
    model = tiny(name, num_classes=5)
    out = model(image(name))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(-1).mean().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"parameters without a finite gradient: {bad[:5]}"


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_every_convolution_called_is_the_opaque_one(name):
    """A plain nn.Conv2d called in a forward would leave an aten.convolution in a compiled graph, whose layout
    optimisation stores the (B, H, W, C) maps transposed (ssm_kernels.conv2d); plain ones may hold parameters only."""
    model = tiny(name)
    called = []
    for module_name, m in model.named_modules():
        if type(m) is torch.nn.Conv2d:
            m.register_forward_hook(lambda *_, n=module_name: called.append(n))
    model(image(name))
    assert not called, f"plain nn.Conv2d called (use vmamba_zoo.layers.Conv2d): {called}"


@pytest.mark.parametrize("name", MODELS)
def test_default_cfg_head_and_pooling(name):
    model = tiny(name).eval()
    cfg = model.pretrained_cfg
    missing = [k for k in CFG_KEYS if k not in cfg]
    assert not missing, f"pretrained_cfg lacks {missing}"
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]
    assert model.num_classes == cfg["num_classes"]
    first_conv = model.get_submodule(cfg["first_conv"])
    assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.in_channels == cfg["input_size"][0]
    # a distilled model names both classifiers; get_classifier() is the first
    classifier = model.get_submodule(cfg["classifier"] if isinstance(cfg["classifier"], str) else cfg["classifier"][0])
    current = model.get_classifier()
    assert classifier is (current[0] if isinstance(current, tuple) else current)
    assert classifier.out_features == cfg["num_classes"]

    x = image(name)
    with torch.no_grad():
        features = model.forward_features(x)
        if cfg.get("pool_size"):  # the final map at the default input size
            full = model.forward_features(torch.randn(1, *cfg["input_size"]))
            spatial = full.shape[1:3] if model.output_fmt == "NHWC" else full.shape[2:]
            assert tuple(spatial) == tuple(cfg["pool_size"])
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.num_features) and model.head_hidden_size == model.num_features
        logits = model(x)
        torch.testing.assert_close(logits, model.forward_head(features))
        assert logits.shape == (2, cfg["num_classes"])

        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == (2, model.num_features)
        torch.testing.assert_close(model(x), pre_logits)
        try:
            model.reset_classifier(5, "max")
            pooled_max = True
        except ValueError as err:  # a family whose head pools one way only says so (GroupMamba: the mean)
            assert "global_pool" in str(err)
            model.reset_classifier(5)
            pooled_max = False
        current = model.get_classifier()
        assert model(x).shape == (2, 5) and (current[0] if isinstance(current, tuple) else current).out_features == 5
        max_pooled = model.forward_head(features, pre_logits=True)
        if features.dim() == 4 and pooled_max:  # a map: the pooling is over its spatial axes
            axes = (1, 2) if model.output_fmt == "NHWC" else (2, 3)
            torch.testing.assert_close(max_pooled, features.amax(axes))
            torch.testing.assert_close(pre_logits, features.mean(axes))
            model.reset_classifier(0, "")
            assert model(x).shape == features.shape  # no pooling, no classifier: the final map


@pytest.mark.parametrize("name", MODELS)
def test_in_chans_1_loads_a_three_channel_checkpoint_file(name, tmp_path):
    source = tiny(name)
    path = tmp_path / "checkpoint.pth"
    torch.save(source.state_dict(), path)
    model = tiny(name, in_chans=1, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    first_conv = model.pretrained_cfg["first_conv"] + ".weight"
    theirs, ours = source.state_dict(), model.state_dict()
    assert ours[first_conv].shape[1] == 1
    torch.testing.assert_close(ours[first_conv], adapt_input_conv(1, theirs[first_conv]))
    for key, value in ours.items():
        if key != first_conv:
            torch.testing.assert_close(value, theirs[key], msg=key)
    assert model(image(name, chans=1)).shape == (2, model.num_classes)


@pytest.mark.parametrize("name", MODELS)
def test_features_only_getter_and_fx(name):
    x = image(name)
    torch.manual_seed(0)
    getter = tiny(name, features_only=True).eval()
    torch.manual_seed(0)  # the same weights
    fx = tiny(name, features_only=True, feature_cls="fx").eval()
    layout = getattr(tiny(name), "output_fmt", "NLC")  # a plain model (Vim): token sequences
    with torch.no_grad():
        maps, fx_maps = getter(x), fx(x)
    assert len(maps) == len(fx_maps) == len(getter.feature_info)
    for f, g, chans, reduction in zip(maps, fx_maps, getter.feature_info.channels(), getter.feature_info.reduction()):
        assert f.shape[:2] == (2, chans)  # overlapping patches (Vim's stride 8) may give one row and column less
        assert all(0 <= size // reduction - got <= 1 for size, got in zip(x.shape[2:], f.shape[2:]))
        # FX features are the stage (block) modules' outputs, in the model's own layout (timm's FeatureGraphNet)
        if layout == "NLC":  # the blocks' tokens: the patches and the class token
            assert g.shape == (2, f.shape[2] * f.shape[3] + 1, chans)
        else:
            torch.testing.assert_close(f, g.permute(0, 3, 1, 2) if layout == "NHWC" else g)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates(name):
    model = tiny(name).eval()
    x = image(name)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(intermediates) == len(model.feature_info)
        for feat, info in zip(intermediates, model.feature_info):
            assert feat.shape[:2] == (2, info["num_chs"])
        only = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert len(only) == 2
        torch.testing.assert_close(only[1], intermediates[1])
        kept = model.prune_intermediate_layers([1])
        assert kept == [1] and model.forward_intermediates(x, indices=[1], intermediates_only=True)[0].shape == \
            intermediates[1].shape


# ---- torch.fx --------------------------------------------------------------------------------------

def test_every_public_op_is_an_fx_leaf():
    """Registered with timm by importing vmamba_zoo; a new op joins with ``@public_op``."""
    assert ssm_kernels.PUBLIC_OPS, "ssm_kernels lists its public ops"
    for op in ssm_kernels.PUBLIC_OPS:
        assert op in get_notrace_functions(), f"{op.__name__} is not registered as an FX leaf"
    for name in ("selective_scan", "scan2d", "cross_scan", "cross_merge", "layer_norm"):
        assert getattr(ssm_kernels, name) in ssm_kernels.PUBLIC_OPS


def test_every_op_the_kernels_export_is_a_public_op():
    """A new op must be decorated with ``@public_op`` (or it breaks FX tracing and ONNX export)."""
    helpers = {"resolve_backend", "available_backends", "public_op", "is_exporting"}  # and the references (*_ref)
    for name in ssm_kernels.__all__:
        obj = getattr(ssm_kernels, name)
        if not inspect.isfunction(obj) or name in helpers or name.endswith(("_ref", "_flops")) or obj.__module__ in ("ssm_kernels.paths", "ssm_kernels.flops"):
            continue
        assert obj in ssm_kernels.PUBLIC_OPS, f"ssm_kernels.{name}: decorate it with @public_op (ssm_kernels.ops)"


@pytest.mark.parametrize("name", MODELS)
def test_fx_forward_and_backward_match_eager(name):
    model = tiny(name).eval()
    x = image(name)
    traced = fx_trace(model)
    leaves = {node.target for node in traced.graph.nodes if node.op == "call_function"}
    assert leaves & set(ssm_kernels.PUBLIC_OPS), "the scan ops are leaf nodes of the graph"
    with torch.no_grad():
        torch.testing.assert_close(traced(x)["out"], model(x), rtol=0, atol=0)

    # Train mode without stochastic depth: torchvision's FX extractor drops timm DropPath's in-place
    # rescale as dead code (an upstream quirk, not the zoo's), so drop-path outputs would differ.
    model = tiny(name, drop_path_rate=0.0).train()
    traced = fx_trace(model)
    grads = []
    for fn in (model, lambda t: traced(t)["out"]):
        model.zero_grad()
        fn(x).logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], msg=key)


@pytest.mark.parametrize("layers", ["PatchStem+PatchMerging", "ConvBNStem+ExpandDownsample", "ConvStem+MixerBlock(cpe)"])
def test_shared_layers_trace_with_fx(layers):
    """The layers families share trace as well (an odd map size makes PatchMerging pad)."""
    from vmamba_zoo import layers as L
    stem, second = layers.split("+")
    make = {"PatchMerging": lambda: L.PatchMerging(8, 16), "ExpandDownsample": lambda: L.ExpandDownsample(8, 16),
            "MixerBlock(cpe)": lambda: L.MixerBlock(8, L.SS2D(8), cpe=True)}
    model = torch.nn.Sequential(getattr(L, stem)(3, 8), make[second]()).eval()
    x = torch.randn(1, 3, 36, 36)
    with torch.no_grad():
        torch.testing.assert_close(fx_trace(model)(x)["out"], model(x), rtol=0, atol=0)


class _CrossMixer(torch.nn.Module):
    """A layer that builds scan paths from its input's size and gathers / merges along them."""

    def forward(self, x):
        paths = ssm_kernels.CROSS(x.shape[1], x.shape[2], x.device)
        return ssm_kernels.cross_merge(ssm_kernels.cross_scan(x, paths).cumsum(-1), paths)


def test_scan_paths_built_from_a_traced_size():
    """Under torch.fx a pattern called with the traced map size builds its paths when the graph runs."""
    model = _CrossMixer()
    traced = fx_trace(model)
    for size in ((5, 7), (4, 4)):  # the graph is not specialised to the traced size
        x = torch.randn(2, *size, 3)
        torch.testing.assert_close(traced(x)["out"], model(x), rtol=0, atol=0)


# ---- TorchScript ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_torchscript_is_refused_with_the_reason_and_the_alternatives(name):
    model = tiny(name).eval()
    with pytest.raises(RuntimeError, match=r"does not support torch\.jit\.script.*torch\.jit\.trace.*ONNX"):
        torch.jit.script(model)


@pytest.mark.parametrize("name", MODELS)
def test_torch_jit_trace_matches_eager(name):
    """fvcore's FLOP count traces models; the trace must also hold when it is checked against a rerun."""
    model = tiny(name).eval()
    x = image(name)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_inputs=[(image(name),)])
        torch.testing.assert_close(traced(x), model(x))


def test_fast_layer_norm_scripts():
    norm = FastLayerNorm(8)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(torch.jit.script(norm)(x), norm(x))


def test_position_encoding_and_conv_ffn_script():
    """The standalone layers that call ssm_kernels.dwconv2d script (their TorchScript branch: the plain conv)."""
    from vmamba_zoo.layers import ConvFFN, ConvPosEnc
    x = torch.randn(2, 5, 7, 8)
    for layer in (ConvPosEnc(8), ConvFFN(8, 12)):
        torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))


# ---- ONNX --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_onnx_export_matches_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = tiny(name).eval()
    x = image(name, batch=1)
    path = export_onnx.export(model, x, tmp_path / f"{name}.onnx", optimize=False)
    diff, relative = export_onnx.check(path, model, x)
    assert relative <= export_onnx.TOLERANCE, f"ONNX Runtime differs from PyTorch by {diff:.3g} ({relative:.3g})"
    import onnx
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert all(op[0].isupper() for op in ops), f"only standard ONNX operators: {sorted(ops)}"


def test_export_onnx_tool_rejects_bad_arguments(capsys):
    assert export_onnx.main(["--model", "nope"]) == 2
    assert export_onnx.main(["--model", MODELS[0], "--img-size", "1", "2", "3"]) == 2


# ---- float64 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_float64_forward_backward_on_the_reference_backend(name, monkeypatch):
    monkeypatch.setenv(ssm_kernels.BACKEND_ENV, "reference")
    model = tiny(name, num_classes=5)
    x = image(name)
    expected = model.eval()(x)
    model.double()
    out = model(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), expected, rtol=1e-4, atol=1e-5)
    model.train()
    model(x.double()).logsumexp(-1).mean().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.dtype != torch.float64
           or not torch.isfinite(p.grad).all()]
    assert not bad, f"parameters without a finite float64 gradient: {bad[:5]}"


# ---- torch.compile -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_torch_compile_one_graph_matches_eager_on_the_triton_backend(name, monkeypatch):
    """Every family compiles into one graph (``fullgraph=True``: its Triton kernels are custom ops, none runs between
    graphs), matches eager forward and backward, and a second call with new data reuses the graph."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND", "triton")
    torch._dynamo.reset()
    model = tiny(name, num_classes=5, drop_path_rate=0.0)  # stochastic depth would differ between the two runs
    x = image(name, batch=1)
    eager = model(x)
    eager.logsumexp(-1).mean().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    run = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled = run(x)
    compiled.logsumexp(-1).mean().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-4, atol=1e-6, msg=n)
    with torch._dynamo.config.patch(error_on_recompile=True):
        run(torch.randn_like(x))
