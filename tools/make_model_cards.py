#!/usr/bin/env python
"""Write one model card per registered model, ``model_cards/<model>.md``, from the model itself.

    python tools/make_model_cards.py            # (re)write every card
    python tools/make_model_cards.py --check    # exit 1 if a card is missing, stale or left over

Everything in a card is read, never retyped: the architecture from the built model (on the meta
device, so nothing is allocated), the published numbers from the family's ``PUBLISHED`` and ``CARD``,
the preprocessing and checkpoint URL from its timm ``pretrained_cfg``, the measured throughput from
``results/benchmark.csv`` and the detection / segmentation configs by scanning ``configs/``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import (BENCHMARK_FILE, HOST_BOUND_NOTE, ROOT, STANDARD, host_bound, img_s, latest,  # noqa: E402
                      peak_gib, read_results)

import vmamba_zoo  # noqa: E402
from flops import RESULTS_FILE as DENSE_FILE, paper_numbers  # noqa: E402
from flops import read_results as read_dense  # noqa: E402
from vmamba_zoo.models import PUBLISHED, family_module  # noqa: E402

CARDS = ROOT / "model_cards"
_MODEL_NAME = re.compile(r"model_name\s*=\s*['\"](\w+)['\"]")
_BASE = re.compile(r"_base_\s*=\s*\[?\s*['\"](\./[^'\"]+)['\"]")


def build(name: str) -> torch.nn.Module:
    """The model with its registered hyper-parameters, on the meta device where its constructor allows."""
    try:
        with torch.device("meta"):
            return timm.create_model(name)
    except Exception:  # a constructor that reads tensor values (meta tensors have none): build it for real
        return timm.create_model(name)


def _depth(stage) -> str:
    blocks = getattr(stage, "blocks", stage)
    return str(len(blocks)) if hasattr(blocks, "__len__") else "?"


def config_model(path: Path):
    """The zoo model an mm config's backbone uses (its own ``model_name``, else its local ``_base_``'s)."""
    text = path.read_text()
    found = _MODEL_NAME.findall(text)
    if found:
        return found[-1]
    base = _BASE.search(text)
    return config_model((path.parent / base[1]).resolve()) if base else None


def configs_by_model():
    """{model name: [config paths]} over the paper configs (configs/mmdet, configs/mmseg; no _base_ or toy)."""
    found = {}
    for path in sorted((ROOT / "configs").glob("mm*/*.py")):
        name = config_model(path)
        if name:
            found.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
    return found


def architecture(model) -> list:
    """Lines describing the built model: stages, widths, depths, and its mixers' scan and state size."""
    lines = []
    info = [i for i in getattr(model, "feature_info", []) if isinstance(i, dict)]
    if hasattr(model, "stages") and info:
        depths = [_depth(stage) for stage in model.stages]
        lines += [f"- stages: {len(depths)}, strides {', '.join(str(i['reduction']) for i in info)}",
                  f"- dims: {', '.join(str(i['num_chs']) for i in info)}", f"- depths: {', '.join(depths)}"]
    elif hasattr(model, "blocks"):
        lines += [f"- isotropic: {len(model.blocks)} blocks of width {getattr(model, 'embed_dim', model.num_features)}"]
    scans = {}
    for module in model.modules():
        scan = getattr(module, "scan", None)
        if hasattr(module, "d_state"):
            key = (type(module).__name__, getattr(scan, "name", None), getattr(scan, "num_directions", None))
            scans.setdefault(key, set()).add(module.d_state)
    for (mixer, scan, k), states in scans.items():
        where = f", scan pattern `{scan}` (K = {k})" if scan else ""
        lines.append(f"- mixer: `{mixer}`{where}, d_state {', '.join(map(str, sorted(states)))}")
    lines.append(f"- features: {model.num_features} channels before the classifier")
    return lines


def _num(value, spec="g", unit=""):
    return "—" if value is None else f"{format(value, spec)}{unit}"


def _paper_result(paper: dict) -> str:
    """A config's published result in words: box / mask AP or mIoU (multi-scale in brackets)."""
    parts = [f"{label} {paper[key]}" for key, label in (("box_ap", "box AP"), ("mask_ap", "mask AP"), ("miou", "mIoU"))
             if paper.get(key) is not None]
    multi_scale = f" (multi-scale {paper['miou_ms']})" if paper.get("miou_ms") is not None else ""
    return ", ".join(parts) + multi_scale if parts else "—"


def dense_section(paths, info: dict) -> list:
    """The model's detection / segmentation configs: the paper's result and size beside our count
    (``results/dense_complexity.csv``, written by ``tools/flops.py --configs``)."""
    counted = read_dense(DENSE_FILE)
    out = ["## Detection and segmentation", "",
           "Configs (`tools/train.py CONFIG`, `tools/test.py CONFIG CHECKPOINT`), the paper's result, and params / "
           "GFLOPs counted by `tools/flops.py --configs` (detectors at 1280×800, segmentors at 512×2048) beside "
           "the paper's:", "",
           "| config | paper result | params (M): ours / paper | GFLOPs: ours / paper |", "|---|---|---:|---:|"]
    notes = []
    for path in paths:
        paper, row = paper_numbers(ROOT / path), counted.get(path, {})
        out.append(f"| `{Path(path).stem}` | {_paper_result(paper)} | {row.get('params_m') or '—'} / "
                   f"{paper.get('params_m', '—')} | {row.get('gflops') or '—'} / {paper.get('gflops', '—')} |")
        if paper.get("note"):
            notes.append(f"- `{Path(path).stem}`: {paper['note']}")
    out += [""] + (notes + [""] if notes else [])
    if info.get("dense_source"):
        out += [f"Paper results: {info['dense_source']}.", ""]
    return out


def card(name: str, results, configs) -> str:
    """The Markdown card of ``name``."""
    family = family_module(name)
    info, paper = getattr(family, "CARD", {}), PUBLISHED.get(name, {})
    model = build(name)
    params = sum(p.numel() for p in model.parameters())
    cfg = model.pretrained_cfg
    register_fn = timm.models.model_entrypoint(name)
    summary = (register_fn.__doc__ or name).strip().splitlines()[0]
    official = paper.get("official_name", "—")
    short = name.partition("_")[0]
    out = [f"# {name}", "", f"{summary}", "",
           "| | |", "|---|---|",
           f"| family | {info.get('family', short)} |",
           f"| paper | [{info.get('paper', '—')}](https://arxiv.org/abs/{info.get('arxiv', '')}) |",
           f"| official code | {info.get('code', '—')} (`{official}`, read at {info.get('commit', '—')}) |",
           f"| license | {info.get('license', '—')} |",
           f"| input | {cfg.get('input_size')[1]}×{cfg.get('input_size')[2]}, {cfg.get('interpolation')}, "
           f"crop {cfg.get('crop_pct')}, mean {tuple(cfg.get('mean'))}, std {tuple(cfg.get('std'))} |", ""]
    notes = info.get("notes", [])
    if notes:
        out += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    out += ["## Architecture", ""] + architecture(model)
    if info.get("scan"):
        out.append(f"- scan: {info['scan']}")
    out += ["", "## Size", "",
            "| | ours | official model (exact) | paper |", "|---|---:|---:|---:|",
            f"| params | {params:,} | {_num(paper.get('official_params'), ',')} | {_num(paper.get('params_m'), 'g', 'M')} |",
            f"| FLOPs @224² | {_num(paper.get('official_flops'), ',')} | {_num(paper.get('official_flops'), ',')} | "
            f"{_num(paper.get('gflops'), 'g', 'G')} |", "",
            f"Params counted on the built model; FLOPs by the family's rule ({info.get('flops_rule', '—')}), "
            "equal to the official count (pinned by tests/test_models.py; `tools/flops.py --model "
            f"{name}` recounts them).", ""]
    out += ["## Published results", "", "| benchmark | result | source |", "|---|---|---|",
            f"| ImageNet-1k top-1 | {_num(paper.get('top1'), '.1f', '%')} | {info.get('top1_source', '—')} |"]
    if paper.get("img_s"):
        out.append(f"| throughput, img/s inference / training | {paper['img_s']} / {paper.get('train_img_s', '—')} | "
                   f"{info.get('throughput_source', '—')} |")
    out += ["", "## Measured speed", ""]
    measured = {(impl, mode): latest(results, name, impl, mode) for impl in ("ours", "official")
                for mode in ("inference", "train")}
    if any(measured.values()):
        rows = next(r for r in measured.values() if r)
        out += [f"`tools/benchmark.py`, {rows[0]['device']} ({rows[0]['date']}), batch {STANDARD['batch_size']}, "
                f"{STANDARD['img_size']}×{STANDARD['img_size']}, {STANDARD['dtype']} autocast, eager "
                "(`results/benchmark.csv`; a range: several passes of one run"
                + (f"; {HOST_BOUND_NOTE}" if any(map(host_bound, measured.values())) else "") + "):", "",
                "| implementation | inference img/s | training img/s | peak GiB inference / training |",
                "|---|---:|---:|---:|"]
        for impl, label in (("ours", "ours (Triton kernels)"), ("official", f"official `{official}`")):
            inf, train = measured[(impl, "inference")], measured[(impl, "train")]
            if inf or train:
                out.append(f"| {label} | {img_s(inf, mark=True)} | {img_s(train, mark=True)} | "
                           f"{peak_gib(inf)} / {peak_gib(train)} |")
    else:
        out.append("Not measured yet (`tools/benchmark.py --model NAME --official --results-file results/benchmark.csv`).")
    out += ["", "## Usage", "", "```python", "import timm", "import torch", "import vmamba_zoo  # registers the zoo's models", "",
            f'model = timm.create_model("{name}", pretrained=False).eval()   # pretrained=True: the official weights',
            "logits = model(torch.randn(1, 3, 224, 224))",
            f'backbone = timm.create_model("{name}", features_only=True, out_indices=(1, 2, 3))',
            "```", ""]
    if name in configs:
        out += dense_section(configs[name], info)
    url = cfg.get("url") or ""
    out += ["## Official checkpoint", ""]
    if url:
        file = url.rpartition("/")[2]
        out += [f"Published at {url}. `pretrained=True` downloads it; offline, load the file directly:", "",
                "```python", f'model = timm.create_model("{name}", pretrained=True,',
                f'                          pretrained_cfg_overlay=dict(file="{file}"))', "```", "",
                "or convert it once into a plain state dict:", "", "```",
                f"python tools/convert_checkpoint.py --model {name} --input {file} --output {name}.in1k.pth", "```", ""]
    else:
        out += ["No official checkpoint is published for this model.", ""]
    out += ["## Citation", "", "```bibtex", info.get("bibtex", "").strip(), "```", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 if any card differs")
    parser.add_argument("--results-file", default=str(BENCHMARK_FILE))
    parser.add_argument("--out-dir", default=str(CARDS))
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    results, configs = read_results(args.results_file), configs_by_model()
    names = vmamba_zoo.list_models()
    stale = []
    for name in names:
        path, text = out_dir / f"{name}.md", card(name, results, configs)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(f"{path} is {'stale' if path.exists() else 'missing'}")
        elif not path.exists() or path.read_text() != text:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    extra = sorted(p for p in out_dir.glob("*.md") if p.stem not in names) if out_dir.exists() else []
    stale += [f"{p} belongs to no registered model" for p in extra]
    if args.check:
        for line in stale:
            print(line, file=sys.stderr)
        if stale:
            print("regenerate: python tools/make_model_cards.py", file=sys.stderr)
        return 1 if stale else 0
    for path in extra:
        print(f"left over (not a registered model): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
