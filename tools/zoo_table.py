#!/usr/bin/env python
"""The zoo table: every registered model's parameters and GFLOPs beside the paper's, its published top-1
and its GPU throughput from the committed results file.

    python tools/zoo_table.py                         # print the table (Markdown)
    python tools/zoo_table.py --perf                  # the performance table (every model of the latest run)
    python tools/zoo_table.py --update README.md      # rewrite the README's two tables in place
    python tools/zoo_table.py --count                 # recount params and GFLOPs with fvcore (slow)

Params and GFLOPs (224x224) are the official models' exact counts, ``PUBLISHED[name]['official_params' /
'official_flops']``, which the tests pin our models to (tests/test_models.py counts ours with fvcore
and the family's FLOPs rule and requires equality); ``--count`` recounts them here. Throughput comes
from ``results/benchmark.csv`` (tools/benchmark.py, batch 128, 224x224, fp16 autocast, eager), ours
and, in brackets, the official implementation measured in the same run; "—" where not measured.
The table grows by itself as families register (``vmamba_zoo.models.FAMILIES``).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import (BENCHMARK_FILE, HOST_BOUND_NOTE, ROOT, STANDARD, img_s, latest, peak_gib,  # noqa: E402
                      read_results, run_of)

import vmamba_zoo  # noqa: E402
from vmamba_zoo.models import PUBLISHED, family_module  # noqa: E402



def markers(block: str):
    """The README's begin / end markers of a generated block ('zoo-table' or 'perf-table')."""
    return f"<!-- {block}: begin (tools/zoo_table.py --update README.md) -->", f"<!-- {block}: end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="wildcard filter on model names (default: all)")
    parser.add_argument("--results-file", default=str(BENCHMARK_FILE), help="benchmark results (CSV or JSON)")
    parser.add_argument("--update", metavar="README", help="rewrite the README's generated tables (zoo-table and "
                        "perf-table, between their <!-- ... begin/end --> markers)")
    parser.add_argument("--perf", action="store_true", help="print the performance table instead")
    parser.add_argument("--count", action="store_true", help="count params and GFLOPs with fvcore instead")
    return parser.parse_args(argv)


def _num(value, spec):
    return "—" if value is None else format(value, spec)


def _throughput(results, name, mode):
    ours, official = latest(results, name, "ours", mode), latest(results, name, "official", mode)
    cell = img_s(ours)
    return cell if not official else f"{cell} ({img_s(official)})"


def _devices(results, names):
    found = []
    for name in names:
        for impl in ("ours", "official"):
            for mode in ("inference", "train"):
                found += [(r["device"], r["date"]) for r in latest(results, name, impl, mode)]
    return sorted(set(found))


def counted(name):
    """(params, FLOPs) of our model counted with fvcore by the family's rule, at 224x224."""
    import timm

    from vmamba_zoo.profiling import count_flops, count_params
    model = timm.create_model(name).eval()
    return count_params(model), count_flops(model, (3, 224, 224))


def table(names, results, count=False) -> str:
    """The zoo table in Markdown, with its caption and the sources of the top-1 numbers."""
    lines = ["| model | params (M) | paper params (M) | GFLOPs @224 | paper GFLOPs | top-1 (%) | "
             "inference img/s: ours (official) | training img/s: ours (official) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    sources = {}
    for name in names:
        paper = PUBLISHED.get(name, {})
        params, flops = counted(name) if count else (paper.get("official_params"), paper.get("official_flops"))
        card = getattr(family_module(name), "CARD", {})
        sources[card.get("family", name)] = card.get("top1_source", "—")
        lines.append(f"| `{name}` | {_num(params and params / 1e6, '.2f')} | {_num(paper.get('params_m'), 'g')} | "
                     f"{_num(flops and flops / 1e9, '.2f')} | {_num(paper.get('gflops'), 'g')} | "
                     f"{_num(paper.get('top1'), '.1f')} | {_throughput(results, name, 'inference')} | "
                     f"{_throughput(results, name, 'train')} |")
    where = "; ".join(f"{device} ({date})" for device, date in _devices(results, names)) or "not measured yet"
    lines += ["", f"Throughput: {where}, batch {STANDARD['batch_size']}, {STANDARD['img_size']}×{STANDARD['img_size']}, "
                  f"{STANDARD['dtype']} autocast, eager, from `results/benchmark.csv` (a range: several passes of "
                  "one run); in brackets the official implementation (where each was measured: the performance table). "
                  + ("Params and GFLOPs counted with fvcore." if count else
                     "Params and GFLOPs: ours, equal to the official models' exact counts (pinned by the tests)."),
              "Top-1 (ImageNet-1k) sources: " + "; ".join(f"{family}: {src}" for family, src in sources.items()) + "."]
    return "\n".join(lines)


def perf_table(results) -> str:
    """The README's performance table: every model of the latest standard run (ours, official, timm)."""
    lines = ["| model | implementation | inference img/s | training img/s | peak GiB inference / training |",
             "|---|---|---:|---:|---:|"]
    seen = []
    for row in results:
        key = (row["model"], row["impl"])
        if key not in seen and all(str(row.get(k, "")) == str(v) for k, v in STANDARD.items()):
            seen.append(key)
    order = {"ours": 0, "official": 1, "timm": 2}
    zoo = vmamba_zoo.list_models()
    seen.sort(key=lambda k: (k[1] == "timm", zoo.index(k[0]) if k[0] in zoo else 0, order.get(k[1], 3)))
    runs = []  # the distinct runs (device, date, note) the rows come from, numbered in the table
    for model, impl in seen:
        inf, train = latest(results, model, impl, "inference"), latest(results, model, impl, "train")
        official_name = PUBLISHED.get(model, {}).get("official_name")
        label = {"ours": "ours", "official": f"official `{official_name}`" if official_name else "official",
                 "timm": "timm"}.get(impl, impl)
        marks = []
        for r in inf + train:
            date, device, note = run_of(r)
            run = (device, date, note)
            if run not in runs:
                runs.append(run)
            if str(runs.index(run) + 1) not in marks:
                marks.append(str(runs.index(run) + 1))
        lines.append(f"| `{model}` | {label} [{','.join(marks)}] | {img_s(inf, mark=True)} | {img_s(train, mark=True)} | "
                     f"{peak_gib(inf)} / {peak_gib(train)} |")
    lines += ["", f"`tools/benchmark.py`, batch {STANDARD['batch_size']}, {STANDARD['img_size']}×{STANDARD['img_size']}, "
                  f"{STANDARD['dtype']} autocast, eager (`results/benchmark.csv`; a range: several passes; — : not "
                  f"recorded; {HOST_BOUND_NOTE}). Runs:" if runs else "Not measured yet."]
    lines += [f"- [{i}] {device}, {date}{': ' + note if note else ''}." for i, (device, date, note) in enumerate(runs, 1)]
    return "\n".join(lines)


_SIZES = ["n", "m", "ti", "t", "s", "b"]


def configs_table(root=ROOT) -> str:
    """The detection / segmentation configs by family, their OpenMMLab names folded over the model sizes
    (``mask-rcnn_vmamba-{t,s,b}_fpn_1x_coco``), from the file names under configs/mmdet and configs/mmseg."""
    families = {}
    for scope in ("mmdet", "mmseg"):
        for path in sorted((Path(root) / "configs" / scope).glob("*.py")):
            method, backbone, rest = path.stem.split("_", 2)
            family, _, size = backbone.rpartition("-")
            sizes = families.setdefault(family, {}).setdefault(scope, {}).setdefault((method, rest), [])
            sizes.append(size)
    order = [name.partition("_")[0] for name in vmamba_zoo.list_models()]
    lines = ["| family | detection, COCO (`configs/mmdet/`) | segmentation, ADE20K (`configs/mmseg/`) |", "|---|---|---|"]
    for family in sorted(families, key=lambda f: order.index(f) if f in order else len(order)):
        cells = []
        for scope in ("mmdet", "mmseg"):
            names = []
            for (method, rest), sizes in families[family].get(scope, {}).items():
                sizes = sorted(sizes, key=lambda s: _SIZES.index(s) if s in _SIZES else len(_SIZES))
                folded = sizes[0] if len(sizes) == 1 else "{" + ",".join(sizes) + "}"
                names.append(f"`{method}_{family}-{folded}_{rest}`")
            cells.append("<br>".join(names) or "—")
        lines.append(f"| {family} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def blocks(results, names=None, count=False) -> dict:
    """The README's generated blocks by marker name."""
    return {"zoo-table": table(names or vmamba_zoo.list_models(), results, count), "perf-table": perf_table(results),
            "configs-table": configs_table()}


def update_readme(path, texts) -> bool:
    """Replace each generated block (name -> text) between its markers in ``path``; True when it changed."""
    path = Path(path)
    old = new = path.read_text()
    for block, text in texts.items():
        begin, end = markers(block)
        if begin not in new or end not in new:
            raise ValueError(f"{path} has no {block} markers ({begin} ... {end})")
        head, rest = new.split(begin, 1)
        new = head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1]
    if new != old:
        path.write_text(new)
    return new != old


def readme_block(block: str, path=ROOT / "README.md") -> str:
    """The text currently between the README's markers of ``block``."""
    begin, end = markers(block)
    return Path(path).read_text().split(begin, 1)[1].split(end, 1)[0].strip("\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    # fvcore calls torch.jit.script when imported, which torch 2.14 answers with a FutureWarning (as pytest.ini)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
    names = vmamba_zoo.list_models(args.models)
    if not names:
        print(f"no model matches {args.models!r}", file=sys.stderr)
        return 2
    results = read_results(args.results_file)
    if args.update:
        changed = update_readme(args.update, blocks(results, count=args.count))
        print(f"{args.update}: {'tables updated' if changed else 'tables already current'}")
    else:
        print(perf_table(results) if args.perf else table(names, results, count=args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
