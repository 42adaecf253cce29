#!/usr/bin/env python
"""Parameters and GFLOPs of a zoo model, or of a whole detector / segmentor, counted as the papers count them.

    python tools/flops.py --model vmamba_tiny
    python tools/flops.py --model vmamba_small --img-size 512
    python tools/flops.py --model vmamba_base --img-size 800 1280 --by-operator
    python tools/flops.py --config configs/mmdet/mask-rcnn_vmamba-t_fpn_1x_coco.py      # at 1280x800
    python tools/flops.py --config configs/mmseg/upernet_vmamba-t_8xb2-160k_ade20k-512x512.py   # at 512x2048
    python tools/flops.py --configs            # every paper config -> results/dense_complexity.csv
    python tools/flops.py --configs configs/mmdet/mask-rcnn_vssd-t_fpn_1x_coco.py   # recount one row of it

With ``--config`` the model is built from an mmdet / mmseg config (randomly initialised, nothing is
downloaded) and one image of ``--shape H W`` goes through its inference graph in 'tensor' mode, as the
VMamba authors' analysis counts it: for Mask R-CNN backbone, FPN, RPN, the box head on the RPN's
proposals (up to 1000) and the mask head on the first 100 of them, at 1280x800 (mmdet's get_flops
default; H and W swapped give the same count); for UperNet backbone and decode head (the auxiliary
head is training only, but its parameters are counted, as the papers do) at 512x2048.

With ``--configs`` each config is counted at its default input and a row is written to ``--results-file``
beside the paper's numbers, which each config holds in a top-level ``paper = dict(params_m=..., gflops=...,
note=...)`` (``note``: why a count differs from the paper's, where it does). Rows of configs not counted in
this run are kept (if the config still exists), so a subset can be recounted; a model that two configs build
(a 1x and a 3x schedule) is counted once; ``--refresh-paper`` rewrites only the paper columns (after editing
a config's ``paper``). Every paper config takes about 10 minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import sys
import warnings
from pathlib import Path

import timm

# fvcore calls torch.jit.script when imported, which torch 2.14 answers with a FutureWarning (as pytest.ini)
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import vmamba_zoo  # noqa: E402
from vmamba_zoo.profiling import count_params, flop_analysis  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help=f"one of: {', '.join(vmamba_zoo.list_models())}")
    target.add_argument("--config", help="an mmdet / mmseg config: count the whole detector or segmentor")
    target.add_argument("--configs", nargs="*", metavar="CFG",
                        help="count these configs (none given: every paper config under configs/mmdet and "
                             "configs/mmseg) and write the rows to --results-file")
    target.add_argument("--refresh-paper", action="store_true",
                        help="count nothing: rewrite the paper columns of --results-file from the configs")
    parser.add_argument("--results-file", default=str(RESULTS_FILE), help="CSV written by --configs")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"),
                        help="input of --config / --configs (default 1280 800 for mmdet, 512 2048 for mmseg)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224], metavar="N",
                        help="input size: N (square) or H W (default 224)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (0: backbone only)")
    parser.add_argument("--by-operator", action="store_true", help="also print FLOPs per operator type")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.configs is not None or args.refresh_paper:
        configs = [] if args.refresh_paper else args.configs or paper_configs()
        return count_configs(configs, args.results_file, args.shape)
    if args.config:
        return report_config(args.config, args.shape, args.by_operator)
    if args.model not in vmamba_zoo.list_models():
        print(f"unknown model {args.model!r}; the zoo has: {', '.join(vmamba_zoo.list_models())}", file=sys.stderr)
        return 2
    if len(args.img_size) not in (1, 2):
        print("--img-size takes N or H W", file=sys.stderr)
        return 2
    height, width = (args.img_size * 2)[:2]
    model = timm.create_model(args.model, num_classes=args.num_classes).eval()
    analysis = flop_analysis(model, input_size=(3, height, width))
    print(f"{args.model} @ {height}x{width}: params {count_params(model) / 1e6:.2f} M, "
          f"GFLOPs {analysis.total() / 1e9:.3f}")
    if args.by_operator:
        for op, flops in sorted(analysis.by_operator().items(), key=lambda kv: -kv[1]):
            print(f"  {op:<28s} {flops / 1e9:10.4f} G")
    return 0


#: the inputs the papers count detection and segmentation at, (H, W)
DEFAULT_SHAPES = {"mmdet": (1280, 800), "mmseg": (512, 2048)}

ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILE = ROOT / "results" / "dense_complexity.csv"
RESULT_FIELDS = ["config", "model", "input", "params", "params_m", "gflops", "backbone_params_m", "backbone_gflops",
                 "paper_params_m", "paper_gflops", "params_diff_pct", "gflops_diff_pct", "note"]


def paper_configs(root: Path = ROOT) -> list:
    """The paper configs: every config directly in configs/mmdet and configs/mmseg (not toy/, not _base_/)."""
    return sorted(str(path.relative_to(root)) for scope in ("mmdet", "mmseg")
                  for path in (root / "configs" / scope).glob("*.py"))


def paper_numbers(config) -> dict:
    """The ``paper = dict(...)`` of a config file itself, not one inherited from its ``_base_`` (a config
    built on another paper config must not take over that one's numbers); {} if it has none."""
    for node in ast.parse(Path(config).read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["paper"]:
            if not (isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "dict"):
                raise ValueError(f"{config}: `paper` must be a dict(key=literal, ...) call")
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.value.keywords}
    return {}


def read_results(path) -> dict:
    """{config: row} of a --results-file CSV (empty if it does not exist)."""
    if not Path(path).exists():
        return {}
    with open(path, newline="") as f:
        return {row["config"]: row for row in csv.DictReader(f)}


def config_complexity(config: str, shape=None, cfg_options=None) -> dict:
    """Build the model of an mm config and count it: params and FLOPs, total and per top-level part.

    Returns dict(scope, shape, params, flops, parts={name: (params, flops)}, analysis).
    """
    import torch

    from vmamba_zoo.mm import build_model_from_config

    torch.manual_seed(0)  # the same weights each time: how many proposals survive the RPN's NMS depends on them
    model, scope = build_model_from_config(config, cfg_options)
    model.eval()
    height, width = shape or DEFAULT_SHAPES[scope]
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0), padding_size=[0, 0, 0, 0])
    if scope == "mmdet":
        from mmdet.structures import DetDataSample as Sample
    else:
        from mmseg.structures import SegDataSample as Sample
    samples = [Sample(metainfo=meta)]

    class Graph(torch.nn.Module):  # the inference graph without post-processing, as mm's 'tensor' mode
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, samples, mode="tensor")

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, height, width, generator=generator)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = flop_analysis(Graph(), inputs=(image,))
        total = int(analysis.total())
        by_module = analysis.by_module()
    parts = {name: (count_params(child), int(by_module.get(f"model.{name}", 0)))
             for name, child in model.named_children() if count_params(child)}
    return dict(scope=scope, shape=(height, width), params=count_params(model), flops=total, parts=parts,
                analysis=analysis)


def model_key(cfg) -> str:
    """What the count depends on: the model config without the backbone's pretrained weights (a 3x config
    builds the same detector as its 1x one and is not counted twice)."""
    model = cfg.model.to_dict()
    model.get("backbone", {}).pop("init_cfg", None)
    return json.dumps(model, sort_keys=True, default=str)


def paper_columns(config, params: int, gflops: float) -> dict:
    """The --results-file columns that come from the config's ``paper`` numbers, beside our params / GFLOPs."""
    paper = paper_numbers(config)
    columns = dict(paper_params_m=paper.get("params_m", ""), paper_gflops=paper.get("gflops", ""),
                   params_diff_pct="", gflops_diff_pct="", note=paper.get("note", ""))
    for key, ours, theirs in (("params_diff_pct", params / 1e6, paper.get("params_m")),
                              ("gflops_diff_pct", gflops, paper.get("gflops"))):
        if theirs:
            columns[key] = f"{round(100 * (ours - theirs) / theirs, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"
    return columns


def complexity_row(config: str, counted=None, shape=None) -> dict:
    """One --results-file row: the config counted at its default input, beside its ``paper`` numbers.

    ``counted``: a dict {model_key: config_complexity result} shared between calls, to count each model once.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    counted = {} if counted is None else counted
    key = model_key(cfg)
    if key not in counted:
        counted[key] = config_complexity(config, shape)
    result = counted[key]
    backbone_params, backbone_flops = result["parts"]["backbone"]
    gflops = round(result["flops"] / 1e9, 1)
    return dict(config=config, model=cfg.model.backbone.get("model_name", cfg.model.backbone.type),
                input="x".join(map(str, result["shape"])), params=result["params"],
                params_m=f"{result['params'] / 1e6:.2f}", gflops=f"{gflops:.1f}",
                backbone_params_m=f"{backbone_params / 1e6:.2f}", backbone_gflops=f"{backbone_flops / 1e9:.1f}",
                **paper_columns(config, result["params"], gflops))


def write_results(rows: dict, results_file) -> None:
    """Write {config: row} sorted by config, the paper columns read afresh from each config file."""
    Path(results_file).parent.mkdir(parents=True, exist_ok=True)
    with open(results_file, "w", newline="") as f:
        writer = csv.DictWriter(f, RESULT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for config in sorted(rows):
            row = rows[config]
            row.update(paper_columns(ROOT / config, int(row["params"]), float(row["gflops"])))
            writer.writerow(row)


def count_configs(configs, results_file, shape=None) -> int:
    """Count ``configs`` one after another and (re)write their rows of ``results_file``, sorted by config.

    A full-size count takes minutes on a CPU; the file is rewritten after every config, so an interrupted
    run keeps what it counted. Rows of configs not in ``configs`` are kept where the config still exists (their
    paper columns refreshed: with no ``configs`` that is all it does).
    """
    from tqdm import tqdm

    rows = {config: row for config, row in read_results(results_file).items() if (ROOT / config).exists()}
    counted = {}
    progress = tqdm([Path(config).resolve() for config in configs], unit="config")
    for path in progress:
        progress.set_description(path.stem)
        config = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        rows[config] = row = complexity_row(str(path), counted, shape)
        row["config"] = config
        progress.write(f"{config}: params {row['params_m']} M ({row['params_diff_pct'] or '-'}%), "
                       f"GFLOPs {row['gflops']} ({row['gflops_diff_pct'] or '-'}%)")
        write_results(rows, results_file)
    write_results(rows, results_file)
    return 0


def report_config(config: str, shape=None, by_operator: bool = False) -> int:
    result = config_complexity(config, shape)
    height, width = result["shape"]
    print(f"{config} @ {height}x{width} ({result['scope']}): params {result['params'] / 1e6:.2f} M, "
          f"GFLOPs {result['flops'] / 1e9:.1f}")
    for name, (params, flops) in result["parts"].items():
        print(f"  {name:<16s} params {params / 1e6:7.2f} M   GFLOPs {flops / 1e9:8.1f}")
    if by_operator:
        for op, flops in sorted(result["analysis"].by_operator().items(), key=lambda kv: -kv[1]):
            print(f"  {op:<28s} {flops / 1e9:10.4f} G")
    return 0


if __name__ == "__main__":
    sys.exit(main())
