#!/usr/bin/env python
"""Throughput and memory of zoo models beside any timm model and the official implementations (timm's flags).

    python tools/benchmark.py --model 'vmamba_*' swin_tiny_patch4_window7_224 convnext_tiny \\
        --batch-size 128 --amp --amp-dtype float16 --bench both --results-file results/benchmark.csv
    python tools/benchmark.py --model vmamba_tiny --official --official-root ~/official   # ours beside official
    python tools/benchmark.py --model vmamba_tiny --torchcompile reduce-overhead            # CUDA graphs
    python tools/benchmark.py --model vmamba_tiny --torchcompile reduce-overhead --freezing -b 1 --bench inference
    python tools/benchmark.py --model vmamba_tiny --sweep --sweep-sizes 512 1024 2048 \\
        --results-file results/sweep_vmamba_tiny.csv                                       # + sweep_vmamba_tiny.png

``--model`` takes names or globs: a glob selects the zoo's models it matches (``'*'``: all of them),
and only when it matches none, timm's. Inference is a no-grad forward, training a forward, cross
entropy, backward and an SGD step, both on random images, timed with CUDA events after the warm-up
iterations (the wall clock on CPU); peak memory is the GPU's peak allocation over the timed steps;
``host_ms`` is the wall time to issue one step on an idle GPU (about the whole step: bound by the host).
Every measurement is one row in ``--results-file`` (appended; ``.csv`` or ``.json``), with the device,
torch and Triton versions and the date; ``impl`` says whose code ran: ours, official or timm.

The process pins itself to ``--cpus`` (4) of its CPUs, children included: an eager model whose host only
just keeps the GPU busy (vmamba_tiny at batch 128) varied 5780-8870 img/s between unpinned processes on a
lent H200 (16 vCPUs, one NUMA node) and 9478-10345 pinned to any 4 cores or one; ``--cpus 0`` leaves it.

``--passes N`` runs N passes, each in a process of its own, the models in alternating order (a b, b a, ...), and
prints every number's spread between the passes: host-bound numbers move between processes, and only a second
pass in the other order tells how much.

``--sweep`` measures each model over input sizes at batch 1 and at the largest power-of-two batch that
fits (or ``--sweep-batches``), and plots ms/img and peak GiB against the pixel count beside the
results file (needs matplotlib: ``pip install -e .[plot]``).
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import timm
import torch
from tqdm import tqdm

import vmamba_zoo
from vmamba_zoo.profiling import largest_batch, measure_throughput
from vmamba_zoo.profiling.speed import is_out_of_memory

sys.path.insert(0, str(Path(__file__).parent))
from _cli import ParseKwargs  # noqa: E402
from _results import append_rows, read_results  # noqa: E402
from official_models import OfficialUnavailable, build_official  # noqa: E402

SWEEP_SIZES = [512, 768, 1024, 1280, 1536, 1792, 2048]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=[], metavar="NAME",
                        help="model names or globs (zoo models, or any timm model such as convnext_tiny)")
    parser.add_argument("--model-list", metavar="FILE", help="a text file of model names or globs, one a line")
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="KEY=VALUE",
                        help="passed to timm.create_model, e.g. depths='(1,1,1,1)'")
    parser.add_argument("--bench", choices=["inference", "train", "both"], default="both")
    parser.add_argument("--batch-size", "-b", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--amp", action="store_true", help="autocast in --amp-dtype (else float32)")
    parser.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--channels-last", action="store_true", help="model and images in channels-last layout")
    parser.add_argument("--torchcompile", nargs="?", const="default", default=None, metavar="MODE",
                        help="torch.compile each model in MODE (default; 'reduce-overhead': CUDA graphs, "
                             "no per-kernel launch cost on the host; 'max-autotune')")
    parser.add_argument("--freezing", action="store_true",
                        help="with --torchcompile: inductor's freezing, inference graphs taking the weights as "
                             "constants with their autocast casts folded in (vmamba_tiny, batch 1, 512x512 under CUDA "
                             "graphs: 309 -> 199 kernels a forward)")
    parser.add_argument("--num-warm-iter", type=int, default=10)
    parser.add_argument("--num-bench-iter", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results-file", metavar="FILE", help="append one row per measurement (.csv or .json)")
    parser.add_argument("--profile", action="store_true",
                        help="also print each model's GPU kernels by time (torch.profiler over 3 steps per mode)")
    parser.add_argument("--cpus", type=int, default=4, metavar="N",
                        help="pin the process to N of its CPUs for stable host timing (0: no pinning)")
    parser.add_argument("--note", default="", help="free text for the rows' note column (e.g. the commit measured)")
    parser.add_argument("--official", action="store_true",
                        help="also measure the official implementation of each zoo model, where it imports")
    parser.add_argument("--official-root", metavar="DIR", default=None,
                        help="directory of the official checkouts (default: $OFFICIAL_ROOT; tools/official_models.py)")
    parser.add_argument("--sweep", action="store_true", help="resolution sweep over --sweep-sizes, with a plot")
    parser.add_argument("--sweep-sizes", type=int, nargs="+", default=SWEEP_SIZES, metavar="N")
    parser.add_argument("--sweep-batches", nargs="+", default=["1", "max"], metavar="B",
                        help="batch sizes of the sweep; 'max': the largest power of two that fits (default: 1 max)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="upper limit of the sweep's 'max' batch")
    parser.add_argument("--plot", metavar="PNG", help="the sweep's plot (default: the results file with .png)")
    parser.add_argument("--passes", type=int, default=1, metavar="N",
                        help="measure N times, each pass a process of its own with the models in alternating order, "
                             "and print each number's spread between passes (default 1: this process)")
    parser.add_argument("--official-only", action="store_true", help=argparse.SUPPRESS)  # the child process's mode
    return parser.parse_args(argv)


def official_in_own_process(name: str, args) -> list:
    """Measure the official ``name`` in a child process: the families' official code share module names
    (``models``, ``selective_scan_cuda_core``), so one process can hold only one family's. Its lines are
    relayed; its rows come back through a results file of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--official-only", "--model", name,
                "--results-file", str(rows_file), "--bench", args.bench, "--batch-size", str(args.batch_size),
                "--img-size", str(args.img_size), "--amp-dtype", args.amp_dtype, "--num-warm-iter",
                str(args.num_warm_iter), "--num-bench-iter", str(args.num_bench_iter), "--device", args.device,
                "--note", args.note, "--max-batch-size", str(args.max_batch_size)]
        argv += ["--amp"] * args.amp + ["--channels-last"] * args.channels_last + ["--profile"] * args.profile
        argv += ["--torchcompile", args.torchcompile] if args.torchcompile else []
        argv += ["--freezing"] * args.freezing
        argv += ["--official-root", args.official_root] if args.official_root else []
        if args.sweep:
            argv += ["--sweep", "--sweep-sizes", *map(str, args.sweep_sizes), "--sweep-batches", *args.sweep_batches]
        child = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        relayed = [line for line in child.stdout.splitlines() if line.startswith(f"{name} (official)")]
        for line in relayed:
            tqdm.write(line)
        if child.returncode != 0 and not relayed:
            tail = "\n    ".join(child.stdout.strip().splitlines()[-5:])
            tqdm.write(f"{name} (official): failed: exit code {child.returncode}:\n    {tail}")
        return read_results(rows_file) if rows_file.exists() else []


def expand_models(patterns):
    """Model names from names or globs: the zoo's models a glob matches, else timm's."""
    zoo = vmamba_zoo.list_models()
    names = []
    for pattern in patterns:
        found = fnmatch.filter(zoo, pattern)
        if not found:
            found = timm.list_models(pattern) if any(c in pattern for c in "*?[") else [pattern]
        names += [n for n in found if n not in names]
    return names


def environment(device: torch.device) -> dict:
    """The columns that say where and with what a measurement ran."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.machine()} ({torch.get_num_threads()} threads)"
    return dict(date=datetime.date.today().isoformat(), device=name, torch=torch.__version__, triton=triton_version)


def create(name: str, impl: str, args) -> torch.nn.Module:
    """The model to measure: ours or timm's through timm, or the official one."""
    if impl == "official":
        return build_official(name, args.official_root)
    kwargs = dict(args.model_kwargs)
    if impl == "timm":
        if args.sweep:  # one model over many sizes: ViTs interpolate their position embedding per input
            try:
                return timm.create_model(name, dynamic_img_size=True, **kwargs)
            except TypeError:
                pass
        default = timm.get_pretrained_cfg(name)
        size = getattr(default, "input_size", (3, args.img_size, args.img_size))[1:] if default else None
        if size and tuple(size) != (args.img_size, args.img_size):
            try:  # models with a fixed input size (Swin, DeiT) take it at creation
                return timm.create_model(name, img_size=args.img_size, **kwargs)
            except TypeError:
                pass
    return timm.create_model(name, **kwargs)


def profile(run, batch: int, size: int, train: bool, amp, channels_last: bool):
    """The kernels of a few steps by total GPU time, largest first (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        measure_throughput(run, batch, size, train, amp, warmup=0, steps=3, channels_last=channels_last,
                           host_repeats=0)
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    tqdm.write(prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=70))


def run_model(name: str, impl: str, args, env: dict, sizes, batches):
    """Measure one model over sizes x batches x modes; rows of the results file."""
    device = torch.device(args.device)
    model = create(name, impl, args).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.torchcompile:
        torch._inductor.config.freezing = args.freezing
    # a sweep compiles each size for itself (dynamic=False): after a second size torch.compile would otherwise
    # trace symbolic sizes, and CUDA graphs (reduce-overhead) of a dynamic graph fell back to eager speed
    run = torch.compile(model, mode=args.torchcompile, dynamic=False if args.sweep else None) \
        if args.torchcompile else model
    amp = getattr(torch, args.amp_dtype) if args.amp else None
    modes = ["inference", "train"] if args.bench == "both" else [args.bench]
    rows = []
    for size in sizes:
        for mode in modes:
            train = mode == "train"
            for rule in batches:
                batch = int(rule) if rule != "max" else largest_batch(
                    run, size, train, amp, args.channels_last, limit=args.max_batch_size)
                try:
                    result = measure_throughput(run, batch, size, train, amp, warmup=args.num_warm_iter,
                                                steps=args.num_bench_iter, channels_last=args.channels_last)
                except RuntimeError as err:
                    if not is_out_of_memory(err):
                        raise
                    tqdm.write(f"{name} ({impl}) {mode} {size}x{size} batch {batch}: out of memory")
                    torch.cuda.empty_cache()
                    continue
                rows.append(dict(env, model=name, impl=impl, mode=mode, img_s=round(result.img_s, 1),
                                 ms_per_img=round(result.ms_per_img, 4),
                                 peak_gib=None if result.peak_gib is None else round(result.peak_gib, 3),
                                 host_ms=round(result.host_ms, 2),
                                 batch_size=batch, batch_rule=rule if args.sweep else "", img_size=size,
                                 dtype=args.amp_dtype if args.amp else "float32",
                                 channels_last=int(args.channels_last), compile=compile_mode(args),
                                 note=args.note))
                if args.results_file:  # at once: a sweep cut short (a time limit, a crash) keeps what it measured
                    append_rows(args.results_file, rows[-1:])
                tqdm.write(f"{name} ({impl}) {mode} {size}x{size} batch {batch}: {result.img_s:.1f} img/s, "
                           f"{result.ms_per_img:.3f} ms/img"
                           + ("" if result.peak_gib is None else f", peak {result.peak_gib:.2f} GiB")
                           + f", host {result.host_ms:.1f} of {result.ms_per_img * batch:.1f} ms/step")
                if args.profile:
                    profile(run, batch, size, train, amp, args.channels_last)
    del model, run
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def compile_mode(args) -> str:
    """The rows' ``compile`` column: eager, or torch.compile's mode (with ``+freezing``)."""
    return (args.torchcompile or "eager") + ("+freezing" if args.freezing and args.torchcompile else "")


def markdown(rows) -> str:
    """The run's rows as a Markdown table."""
    lines = ["| model | impl | mode | batch | size | img/s | ms/img | peak GiB | host ms/step of ms/step |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peak = "—" if r["peak_gib"] in (None, "") else f"{float(r['peak_gib']):.2f}"
        step = float(r["ms_per_img"]) * int(r["batch_size"])
        host = "—" if r.get("host_ms") in (None, "") else f"{float(r['host_ms']):.1f} of {step:.1f}"
        lines.append(f"| {r['model']} | {r['impl']} | {r['mode']} | {r['batch_size']} | {r['img_size']} | "
                     f"{float(r['img_s']):.1f} | {float(r['ms_per_img']):.3f} | {peak} | {host} |")
    return "\n".join(lines)


def sweep_plot_path(args) -> str:
    """Where a sweep's plot goes: ``--plot``, else the results file with ``.png``, else ``sweep.png``."""
    return args.plot or (str(Path(args.results_file).with_suffix(".png")) if args.results_file else "sweep.png")


def plot_sweep(rows, path):
    """ms/img and peak GiB against the pixel count, one line per model, implementation, mode and batch rule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = {}
    modes = {r.get("compile", "eager") for r in rows}
    for r in rows:
        batch = "largest batch" if r["batch_rule"] == "max" else f"batch {r['batch_rule'] or r['batch_size']}"
        compiled = "" if modes == {"eager"} else f", {r.get('compile', 'eager')}"
        label = f"{r['model']} ({r['impl']}) {r['mode']}, {batch}{compiled}"
        series.setdefault(label, []).append(r)
    for label, points in series.items():
        sizes = {r["batch_size"] for r in points}
        if points[0]["batch_rule"] == "max" and len(sizes) == 1:  # every size fit the same (the search's limit)
            label = label.replace("largest batch", f"largest batch ({sizes.pop()})")
        points.sort(key=lambda r: int(r["img_size"]))
        megapixels = [int(r["img_size"]) ** 2 / 1e6 for r in points]
        ax_time.plot(megapixels, [float(r["ms_per_img"]) for r in points], marker="o", label=label)
        if all(r["peak_gib"] not in (None, "") for r in points):
            ax_mem.plot(megapixels, [float(r["peak_gib"]) for r in points], marker="o", label=label)
    ax_time.set(xlabel="input pixels (M)", ylabel="ms / image", title="time per image")
    ax_mem.set(xlabel="input pixels (M)", ylabel="peak GiB", title="peak memory")
    if not ax_mem.lines:
        ax_mem.text(0.5, 0.5, "measured on CUDA only", ha="center", va="center", transform=ax_mem.transAxes)
    env = rows[0]
    mode = f", {next(iter(modes))}" if len(modes) == 1 else ""  # else each label names its compile mode
    fig.suptitle(f"{env['device']}, {env['dtype']}{mode}, torch {env['torch']}")
    ax_time.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")
    plt.close(fig)


def pin_cpus(count: int) -> str:
    """Pin this process (and the children it starts) to the first ``count`` CPUs it may use; which, in words."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if count <= 0 or not allowed:
        return "unpinned"
    if count < len(allowed):
        allowed = allowed[:count]
        os.sched_setaffinity(0, allowed)
    elif len(allowed) == os.cpu_count():
        return "unpinned"
    # (a pass of --passes inherits its parent's CPUs: as pinned as the parent)
    return f"pinned to CPUs {allowed[0]}-{allowed[-1]}" if len(allowed) > 1 else f"pinned to CPU {allowed[0]}"


def _without(argv, options) -> list:
    """``argv`` less each of ``options`` with its value (``--opt value`` or ``--opt=value``)."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in options:
            skip = True
        elif token.split("=", 1)[0] not in options:
            kept.append(token)
    return kept


def run_passes(args, argv, names) -> int:
    """``--passes``: each pass a child process measuring ``names``, reversed on every other pass; the rows go to the
    results file as each pass ends (their note says which pass), then the spread of each number is printed."""
    rows = []
    for index in range(args.passes):
        order = names if index % 2 == 0 else names[::-1]
        note = "; ".join(filter(None, [args.note, f"pass {index + 1} of {args.passes}"]))
        tqdm.write(f"pass {index + 1} of {args.passes}: {' '.join(order)}")
        with tempfile.TemporaryDirectory() as tmp:
            rows_file = Path(tmp) / "rows.json"
            child = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                    *_without(argv, ("--passes", "--model-list", "--results-file", "--note")),
                                    "--model", *order, "--results-file", str(rows_file), "--note", note])
            measured = read_results(rows_file)
        if args.results_file and measured:
            append_rows(args.results_file, measured)
        rows += measured
        if child.returncode != 0:
            tqdm.write(f"pass {index + 1} failed: exit code {child.returncode}")
            return child.returncode
    print(f"\n{args.passes} passes:\n" + spread(rows))
    if args.sweep and rows:
        plot_sweep(rows, sweep_plot_path(args))
    return 0


def spread(rows) -> str:
    """img/s of each measurement in every pass, and (max - min) / mean between the passes, as a Markdown table."""
    series = {}
    for r in rows:
        key = (r["model"], r["impl"], r["mode"], r["batch_size"], r["img_size"])
        series.setdefault(key, []).append(float(r["img_s"]))
    lines = ["| model | impl | mode | batch | size | img/s by pass | spread |", "|---|---|---|---:|---:|---|---:|"]
    for (model, impl, mode, batch, size), values in series.items():
        mean = sum(values) / len(values)
        lines.append(f"| {model} | {impl} | {mode} | {batch} | {size} | {' / '.join(f'{v:.1f}' for v in values)} | "
                     f"{100 * (max(values) - min(values)) / mean:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.freezing and not args.torchcompile:
        print("--freezing is an option of torch.compile: give --torchcompile too", file=sys.stderr)
        return 2
    pinned = pin_cpus(args.cpus) if not args.official_only else "as the parent"
    patterns = list(args.model)
    if args.model_list:
        patterns += [line.strip() for line in Path(args.model_list).read_text().splitlines()
                     if line.strip() and not line.startswith("#")]
    names = expand_models(patterns or ["vmamba_tiny"])
    unknown = [n for n in names if n not in timm.list_models()]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.passes > 1 and not args.official_only:
        return run_passes(args, argv, names)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    zoo = set(vmamba_zoo.list_models())
    sizes = args.sweep_sizes if args.sweep else [args.img_size]
    batches = args.sweep_batches if args.sweep else [str(args.batch_size)]
    env = environment(device)
    rows = []
    for name in tqdm(names, desc="models", unit="model", file=sys.stderr):
        impls = ["ours", "official"] if name in zoo and args.official else ["ours" if name in zoo else "timm"]
        if args.official_only:
            impls = ["official"]
        for impl in impls:
            in_child = impl == "official" and not args.official_only  # its rows come back through a file
            try:
                if in_child:
                    measured = official_in_own_process(name, args)
                else:
                    measured = run_model(name, impl, args, env, sizes, batches)
            except OfficialUnavailable as err:
                tqdm.write(f"{name} (official): skipped: {err}")
                continue
            except Exception as err:  # the official code failing on this machine must not end the run
                if impl != "official":
                    raise
                tqdm.write(f"{name} (official): failed: {type(err).__name__}: {err}")
                continue
            if args.results_file and measured and in_child:  # run_model appends its rows as it measures them
                append_rows(args.results_file, measured)
            rows += measured
    print(f"\n{env['device']}, torch {env['torch']}, Triton {env['triton'] or '-'}, "
          f"{args.amp_dtype + ' autocast' if args.amp else 'float32'}, {compile_mode(args)}, {pinned}"
          + (f"; appended to {args.results_file}" if args.results_file and rows else ""))
    print(markdown(rows))
    if args.sweep and rows:
        plot_sweep(rows, sweep_plot_path(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
