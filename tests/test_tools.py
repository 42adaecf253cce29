"""The command-line tools, run in-process at small sizes."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
import _results  # noqa: E402
import bench_fusion_floor  # noqa: E402
import bench_graph  # noqa: E402
import bench_reference  # noqa: E402
import benchmark  # noqa: E402
import flops  # noqa: E402
import host_profile  # noqa: E402
import host_speed  # noqa: E402
import official_models  # noqa: E402
import peak_memory  # noqa: E402
import saved_tensors  # noqa: E402
import zoo_table  # noqa: E402

import vmamba_zoo  # noqa: E402
from vmamba_zoo.models import PUBLISHED  # noqa: E402


def test_flops_tool(capsys):
    assert flops.main(["--model", "vmamba_tiny", "--img-size", "64", "96", "--by-operator"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"vmamba_tiny @ 64x96: params 30\.25 M, GFLOPs \d+\.\d+", out)
    assert "PythonOp.SelectiveScanFn" in out
    assert flops.main(["--model", "nope"]) == 2


def test_peak_memory_tool(capsys):
    """GroupMamba-T, batch 128, float16 autocast, on fake CUDA tensors (nothing computed): the peak is in the
    first stage's FFN, fc1's and the dwconv's outputs (392 MiB each; the dwconv2d op's channels-last output,
    allocated by its launcher in the FFN), the block's input and its mid-block residual (float32, 98 MiB each),
    norm2's float16 output (49 MiB) and the autocast cache's weight copies; nothing else (the stem's output, a
    float32 norm) is held there."""
    assert peak_memory.main(["--model", "groupmamba_tiny", "--batch-size", "128", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "activations at the peak 1029.5 MiB" in out
    assert "predicted peak 1.164 GiB" in out
    assert re.search(r"392\.00 MiB +float16 +\(128, 56, 56, 512\) +empty +stages\.0\.blocks\.2\.mlp$", out, re.M)



def test_saved_tensors_tool(capsys):
    """Vim-Ti's training forward at batch 128, float16 autocast, on fake CUDA tensors: what one block keeps for the
    backward (the in-projection's output xz, the convs' output u, the merged scan output in float32, the norm's
    float32 input, the projections' inputs, the scan's checkpoint states and x_proj output), named by the nodes
    that hold it."""
    assert saved_tensors.main(["--model", "vim_tiny", "--batch-size", "128", "--module", "blocks.3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ +167\.80 MiB +blocks\.3$", out, re.M)
    assert re.search(r"36\.94 MiB +float16 +\(128, 197, 384\) +blocks\.3\.mixer +MergeGateFnBackward, "
                     r"CausalConv1dFnBackward", out)
    assert re.search(r"36\.94 MiB +float32 +\(128, 197, 384\) +blocks\.3\.mixer +MergeGateFnBackward$", out, re.M)
    assert "saved in blocks.3* (167.80 MiB)" in out


def test_saved_tensors_counts_each_storage_once():
    """Real tensors on CPU: a storage saved by two ops (and as views) counts once, whole, where it was first saved;
    parameters are not counted."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Sigmoid(), torch.nn.Linear(6, 3))
    rec = saved_tensors.count_saved(model, torch.randn(5, 4))
    by_module = rec.by_module()
    assert by_module["0"] == 5 * 4 * 4                       # the input, saved by the first Linear
    assert by_module["1"] == 5 * 6 * 4                       # sigmoid's output, also the second Linear's input
    entry = next(e for e in rec.saved.values() if e.module == "1")
    assert sorted(entry.ops) == ["AddmmBackward0", "SigmoidBackward0"]
    assert sum(by_module.values()) == 5 * 4 * 4 + 5 * 6 * 4 + by_module[""]  # "": the loss's own saved tensors

def test_zoo_table_tool(capsys, tmp_path):
    """The table lists every registered model with the pinned counts and the results file's throughput."""
    results = tmp_path / "bench.csv"
    benchmark_rows = [dict(date="2026-01-02", model="vmamba_tiny", impl=impl, mode=mode, img_s=v, ms_per_img=1,
                           batch_size=128, img_size=224, dtype="float16", compile="eager", device="GPU X")
                      for impl, mode, v in [("ours", "inference", 900), ("ours", "inference", 1000),
                                            ("official", "inference", 400), ("ours", "train", 300)]]
    _results.append_rows(results, benchmark_rows)
    assert zoo_table.main(["--results-file", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| model | params (M)")
    assert "| `vmamba_tiny` | 30.25 | 30 | 4.91 | 4.9 | 82.6 | 900–1000 (400) | 300 |" in out
    assert all(f"| `{name}` |" in out for name in vmamba_zoo.list_models())
    assert "GPU X (2026-01-02)" in out
    assert zoo_table.main(["--models", "nothing*"]) == 2


def test_tables_take_every_pass_of_a_run(tmp_path):
    """benchmark.py --passes notes each pass ("...; pass 2 of 3"): the tables show the passes of the latest run as one
    range and name the run once, without the pass."""
    rows = [dict(date="2026-01-02", model="vmamba_tiny", impl="ours", mode="inference", img_s=v, ms_per_img=1,
                 batch_size=128, img_size=224, dtype="float16", compile="eager", device="GPU X", note=note)
            for v, note in [(500, "old run"), (900, "new run; pass 1 of 2"), (1000, "new run; pass 2 of 2")]]
    assert [r["img_s"] for r in _results.latest(rows, "vmamba_tiny", "ours", "inference")] == [900, 1000]
    perf = zoo_table.perf_table(rows)
    assert "| `vmamba_tiny` | ours [1] | 900–1000 |" in perf and "- [1] GPU X, 2026-01-02: new run." in perf


def test_host_speed_tool(capsys):
    """Samples of the fixed loop, one a line, then their spread; a CPU the process may not use is refused."""
    assert host_speed.main(["--seconds", "0.3", "--interval", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 3 and all(re.fullmatch(r" *[\d.]+ s: +[\d.]+ ms", line) for line in lines[:-1])
    assert re.fullmatch(r"\d+ samples: min [\d.]+ ms, median .* at least 1.5x the fastest", lines[-1])
    assert host_speed.summary([10.0, 20.0, 12.0, 16.0]).endswith("50% at least 1.5x the fastest")
    assert host_speed.main(["--cpu", "100000", "--seconds", "0"]) == 2


def test_readme_tables_are_the_tools_output():
    """The README's zoo and performance tables are what `tools/zoo_table.py --update README.md` writes."""
    for block, expected in zoo_table.blocks(_results.read_results()).items():
        assert zoo_table.readme_block(block) == expected, "regenerate: python tools/zoo_table.py --update README.md"


def _tiny_bench_args(tmp_path, *extra, models=("--model", "vmamba_t*")):
    kwargs = ["--model-kwargs", "dims=(8,8,8,8)", "depths=(1,1,1,1)"]
    return [*models, *kwargs, "--batch-size", "2", "--img-size", "32", "--num-warm-iter", "1",
            "--num-bench-iter", "1", "--device", "cpu", *extra]


def test_benchmark_appends_rows(tmp_path, capsys):
    """Runs on CPU; each run appends one row per measurement to CSV or JSON results files."""
    for suffix in ("csv", "json"):
        results = tmp_path / f"results.{suffix}"
        assert benchmark.main(_tiny_bench_args(tmp_path, "--results-file", str(results))) == 0
        listed = tmp_path / "models.txt"
        listed.write_text("# a model list: names or globs, one a line\nvmamba_t*\n")
        assert benchmark.main(_tiny_bench_args(tmp_path, "--results-file", str(results), "--bench", "train",
                                               "--note", "second", models=["--model-list", str(listed)])) == 0
        rows = _results.read_results(results)
        assert [(r["model"], r["impl"], r["mode"]) for r in rows] == [
            ("vmamba_tiny", "ours", "inference"), ("vmamba_tiny", "ours", "train"), ("vmamba_tiny", "ours", "train")]
        assert float(rows[0]["img_s"]) > 0 and float(rows[0]["ms_per_img"]) > 0
        assert rows[2]["note"] == "second" and rows[0]["dtype"] == "float32" and rows[0]["compile"] == "eager"
        assert rows[0]["device"].startswith("CPU") and rows[0]["torch"] == torch.__version__
        assert set(_results.FIELDS) <= set(rows[0])
    assert (tmp_path / "results.csv").read_text().count("date,model") == 1
    out = capsys.readouterr().out
    assert "| vmamba_tiny | ours | train | 2 | 32 |" in out
    assert benchmark.main(["--model", "no_such_model", "--device", "cpu"]) == 2
    assert benchmark.main(["--freezing", "--device", "cpu"]) == 2  # an option of torch.compile only
    assert benchmark.compile_mode(benchmark.parse_args(["--torchcompile", "reduce-overhead", "--freezing"])) == \
        "reduce-overhead+freezing"


def test_benchmark_rows_carry_host_time(tmp_path):
    results = tmp_path / "results.csv"
    assert benchmark.main(_tiny_bench_args(tmp_path, "--results-file", str(results))) == 0
    row = _results.read_results(results)[0]
    assert 0 < float(row["host_ms"])  # on CPU the step is all host: about batch * ms_per_img


def test_benchmark_writes_each_row_when_measured(tmp_path, monkeypatch):
    """A run cut short (here the second measurement fails) keeps the rows measured before it in the file."""
    measure = benchmark.measure_throughput

    def fail_after_one(*args, **kwargs):
        if (tmp_path / "results.csv").exists():
            raise RuntimeError("the second measurement failed")
        return measure(*args, **kwargs)

    monkeypatch.setattr(benchmark, "measure_throughput", fail_after_one)
    with pytest.raises(RuntimeError, match="second measurement"):
        benchmark.main(_tiny_bench_args(tmp_path, "--results-file", str(tmp_path / "results.csv"), "--bench", "both"))
    assert [r["mode"] for r in _results.read_results(tmp_path / "results.csv")] == ["inference"]


def test_host_profile_tool(capsys):
    """cProfile over eager steps: the host's time a step, then the functions by their own time."""
    assert host_profile.main(["--model", "vmamba_tiny", "--model-kwargs", "dims=(8,8,8,8)", "depths=(1,1,1,1)",
                              "-b", "1", "--img-size", "32", "--steps", "2", "--top", "5", "--mode", "train",
                              "--cumulative", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"vmamba_tiny train batch 1 32x32: host [0-9.]+ ms a step", out)
    assert "Ordered by: internal time" in out and "Ordered by: cumulative time" in out


def test_host_profile_without_kernels(capsys):
    """--no-kernels: the Triton backend's Python on CPU with the launches skipped; the launcher is restored after."""
    from ssm_kernels.triton import launch
    launcher = launch.Launcher._launch
    assert host_profile.main(["--model", "vmamba_tiny", "--model-kwargs", "dims=(8,8,8,8)", "depths=(1,1,1,1)",
                              "-b", "1", "--img-size", "32", "--steps", "2", "--top", "40", "--device", "cpu",
                              "--no-kernels"]) == 0
    out = capsys.readouterr().out
    assert "ssm_kernels/triton/ops.py" in out  # the Triton backend's Python ran
    assert launch.Launcher._launch is launcher and os.environ.get("SSM_KERNELS_BACKEND") is None


def test_benchmark_globs_and_timm_models():
    zoo = vmamba_zoo.list_models()
    assert benchmark.expand_models(["*"]) == zoo
    assert benchmark.expand_models(["vmamba_tiny", "convnext_tiny", "convnext_t*"])[:2] == ["vmamba_tiny", "convnext_tiny"]


def _official_vmamba_stand_in(root, with_kernel: bool):
    """A stand-in for the official VMamba checkout (the repository is not in CI): the module registers the
    official name; its compiled kernel is a plain module of the extension's name."""
    models = root / "VMamba" / "classification" / "models"
    models.mkdir(parents=True)
    (models / "__init__.py").write_text("")
    (models / "vmamba.py").write_text(
        "import torch\n"
        "try:\n    import selective_scan_cuda_oflex\nexcept ImportError:\n    pass\n"
        "def vmamba_tiny_s1l8():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(4, 1000))\n")
    if with_kernel:
        kernels = root / "VMamba" / "kernels" / "selective_scan"
        kernels.mkdir(parents=True)
        (kernels / "selective_scan_cuda_oflex.py").write_text("")


def test_benchmark_official_skips_or_builds(tmp_path, capsys):
    """--official says why it skips (no checkout, kernels not built); given a checkout it measures the
    official model, built by its registered name in a process of its own."""
    assert benchmark.main(_tiny_bench_args(tmp_path, "--official", "--official-root", str(tmp_path),
                                           "--bench", "inference")) == 0
    assert "vmamba_tiny (official): skipped: no classification/models/vmamba.py in" in capsys.readouterr().out
    _official_vmamba_stand_in(tmp_path / "unbuilt", with_kernel=False)
    assert benchmark.main(_tiny_bench_args(tmp_path, "--official", "--official-root", str(tmp_path / "unbuilt"),
                                           "--bench", "inference")) == 0
    assert "skipped: the official CUDA kernels are not built" in capsys.readouterr().out
    _official_vmamba_stand_in(tmp_path / "built", with_kernel=True)
    results = tmp_path / "r.csv"
    assert benchmark.main(_tiny_bench_args(tmp_path, "--official", "--official-root", str(tmp_path / "built"),
                                           "--bench", "inference", "--results-file", str(results))) == 0
    assert [r["impl"] for r in _results.read_results(results)] == ["ours", "official"]
    assert "models" not in sys.modules  # the official package was imported by the child process only


def test_official_builders_cover_their_families():
    """Every family has an official builder, for models of the zoo."""
    families = {official_models._family(n) for n in vmamba_zoo.list_models()}
    assert set(official_models.SOURCES) == families
    for family, sizes in (("efficient_vmamba", official_models.EFFICIENT_VMAMBA_SIZES),
                          ("spatial_mamba", official_models.SPATIAL_MAMBA_SIZES)):
        names = [n for n in vmamba_zoo.list_models() if official_models._family(n) == family]
        assert {PUBLISHED[n]["official_name"] for n in names} == set(sizes)


def test_benchmark_sweep_writes_csv_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "sweep.csv"
    assert benchmark.main(_tiny_bench_args(tmp_path, "--sweep", "--sweep-sizes", "32", "64", "--max-batch-size", "2",
                                           "--bench", "inference", "--results-file", str(results))) == 0
    rows = _results.read_results(results)
    assert [(r["img_size"], r["batch_rule"], r["batch_size"]) for r in rows] == [
        ("32", "1", "1"), ("32", "max", "2"), ("64", "1", "1"), ("64", "max", "2")]
    png = results.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_reference_tool(capsys, monkeypatch):
    monkeypatch.setattr(bench_reference, "SHAPES", [("tiny", 8, 300, 1, 4), ("tiny N=4", 4, 20, 4, 1)])
    assert bench_reference.main(["--batch-size", "2", "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 6 and all(row.count("|") == 7 for row in rows)


def test_kernel_sass_tool():
    """Compiles a real scan kernel for sm_90 (no GPU needed), outside the tests' interpreter mode."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    tool = Path(__file__).parents[1] / "tools" / "kernel_sass.py"
    out = subprocess.run([sys.executable, str(tool), "--pass", "fwd", "--stage", "4", "--BL", "16"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "VMamba-T stage 4 (Dg=768, L=49, R=48, N=1), BD=16 BL=16" in out
    assert re.search(r"chunk loop: \d+ instructions, \d+\.\d per element and thread", out)


def test_observe_sass_tool():
    """Compiles observe_norm_gate's forward for sm_90 at Spatial-Mamba-T's stage 3 (rows aligned by 4: vector loads)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    tool = Path(__file__).parents[1] / "tools" / "observe_sass.py"
    out = subprocess.run([sys.executable, str(tool), "--pass", "fwd", "--stage", "3"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert re.search(r"s3 E=512 14x14 fwd \(BM=32, BE=128, warps=4, V=4\): REG:\d+ .*, 0 spill instructions", out)
    assert "LDG.E.128" in out


def test_bench_kernels_parts(monkeypatch):
    """The --parts breakdown's pieces run (tiny stages; the interpreter, so each piece once, untimed)."""
    import bench_kernels
    monkeypatch.setattr(bench_kernels, "STAGES", [(20, 5), (70, 3)])
    monkeypatch.setattr(bench_kernels, "bench", lambda fn: (fn(), 1.0)[1])
    rows = bench_kernels.parts_rows(2, "cuda" if torch.cuda.is_available() else "cpu")
    assert [r["shape"] for r in rows] == ["s1 (5x5, D=20)", "s2 (3x3, D=70)"]
    assert all(len(r) == 8 for r in rows)


def test_bench_kernels_floors(monkeypatch):
    """The --floors table's pieces run, the special-function kernel included (tiny stages, interpreter)."""
    import bench_kernels
    monkeypatch.setattr(bench_kernels, "STAGES", [(20, 5)])
    monkeypatch.setattr(bench_kernels, "bench", lambda fn: (fn(), 1.0)[1])
    rows = bench_kernels.floor_rows(2, "cuda" if torch.cuda.is_available() else "cpu", copy_gbs=3000.0)
    assert rows[0]["shape"] == "s1 (5x5, D=20)" and rows[0]["elements (M)"] == 2 * 25 * 4 * 20 / 1e6
    assert rows[0]["70% target"] > rows[0]["issue bound"] and "SFU 2 passes" in rows[0]


def test_model_cards_are_current(tmp_path, capsys):
    """Every registered model has its card, and regenerating changes nothing (--check)."""
    import make_model_cards
    cards = Path(__file__).parents[1] / "model_cards"
    assert {p.stem for p in cards.glob("*.md")} == set(vmamba_zoo.list_models())
    assert make_model_cards.main(["--check"]) == 0, capsys.readouterr().err
    # a stale or missing card fails the check
    (tmp_path / "vmamba_tiny.md").write_text("old")
    assert make_model_cards.main(["--check", "--out-dir", str(tmp_path), "--results-file", str(tmp_path / "none.csv")]) == 1
    assert "vmamba_tiny.md is stale" in capsys.readouterr().err


def test_build_progress_parses_a_compile_log(tmp_path):
    """tools/build_mmcv.sh's progress line: ninja's last [N/M] step, the elapsed time and the log's path."""
    import build_progress
    log = tmp_path / "build.log"
    assert build_progress.progress_line(log, 5) == f"mmcv build: preparing the build, 0 min 05 s elapsed (log: {log})"
    log.write_text("Processing /tmp/onedl-mmcv\n  running build_ext\n")
    assert "preparing the build" in build_progress.progress_line(log, 30)
    log.write_text("  running build_ext\n  [1/77] c++ -MMD -MF a.o.d -c a.cpp\n  [2/77] c++ -c b.cpp\n"
                   "  warning: unused variable [-Wunused-variable]\n  [23/77] c++ -c w.cpp\n")
    assert build_progress.progress_line(log, 365) == f"mmcv build: 23/77 objects compiled, 6 min 05 s elapsed (log: {log})"
    tool = Path(__file__).parents[1] / "tools" / "build_progress.py"
    out = subprocess.run([sys.executable, str(tool), str(log), "61"], capture_output=True, text=True, check=True).stdout
    assert out == f"mmcv build: 23/77 objects compiled, 1 min 01 s elapsed (log: {log})\n"


def test_benchmark_sweep_takes_a_fixed_size_timm_vit(tmp_path):
    """A ViT made for 224 (DeiT) is measured over the sweep's sizes: its position embedding is interpolated."""
    results = tmp_path / "vit.json"
    assert benchmark.main(["--model", "deit_tiny_patch16_224", "--sweep", "--sweep-sizes", "32", "48",
                           "--sweep-batches", "1", "--bench", "inference", "--num-warm-iter", "0",
                           "--num-bench-iter", "1", "--device", "cpu", "--results-file", str(results),
                           "--plot", str(tmp_path / "vit.png")]) == 0
    assert [int(r["img_size"]) for r in _results.read_results(results)] == [32, 48]


def test_benchmark_passes_alternate_in_processes_of_their_own(tmp_path, capsys):
    """--passes 2: two child processes, the models in alternating order; their rows say which pass, and the spread
    between the passes is printed."""
    results = tmp_path / "results.csv"
    args = _tiny_bench_args(tmp_path, "--bench", "inference", "--passes", "2", "--note", "n", "--results-file",
                            str(results), models=("--model", "vmamba_tiny", "vmamba_small"))
    assert benchmark.main(args) == 0
    rows = _results.read_results(results)
    assert [(r["model"], r["note"]) for r in rows] == [
        ("vmamba_tiny", "n; pass 1 of 2"), ("vmamba_small", "n; pass 1 of 2"),
        ("vmamba_small", "n; pass 2 of 2"), ("vmamba_tiny", "n; pass 2 of 2")]
    out = capsys.readouterr().out
    assert "2 passes:" in out and "| vmamba_tiny | ours | inference | 2 | 32 |" in out and "% |" in out


def test_benchmark_child_arguments_drop_the_parents_options():
    assert benchmark._without(["--model", "a", "--passes", "2", "--note=x", "--cpus", "4"], ("--passes", "--note")) \
        == ["--model", "a", "--cpus", "4"]


def test_perf_table_marks_host_bound_numbers(tmp_path):
    """A number whose host took 90% of the step or more to issue it gets a dagger: it follows the CPU."""
    rows = [dict(date="2026-01-02", model="vmamba_tiny", impl="ours", mode=mode, img_s=1000, ms_per_img=0.1,
                 batch_size=128, img_size=224, dtype="float16", compile="eager", device="GPU X", host_ms=host)
            for mode, host in [("inference", 12.0), ("train", 11.0)]]
    out = zoo_table.perf_table(rows)
    assert "| `vmamba_tiny` | ours [1] | 1000 † | 1000 | — / — |" in out and "†: bound by the host" in out
    assert not _results.host_bound([dict(rows[0], host_ms="")])


def test_build_official_fixes_a_checkout_for_cuda_13(tmp_path, capsys):
    """--patch-only on a made-up checkout laid out as Spatial-Mamba's: CCCL 3's removed cub calls replaced, the
    setup script's -gencode pairs removed (the build targets --arch instead), a missing header included; a second
    run changes nothing."""
    import build_official
    checkout = tmp_path / "Spatial-Mamba"
    (checkout / "classification" / "models").mkdir(parents=True)
    scan = checkout / "kernels" / "selective_scan"
    (scan / "csrc").mkdir(parents=True)
    dwconv = checkout / "kernels" / "dwconv2d"
    dwconv.mkdir()
    (dwconv / "launch.cu").write_text("#include <ATen/ATen.h>\nvoid f() {\n    at::NoGradGuard no_grad;\n}\n")
    (scan / "csrc" / "scan.cuh").write_text("void f() {\n    cub::CTA_SYNC();\n    int lane = cub::LaneId();\n}\n")
    (scan / "setup.py").write_text('cc_flag = []\ncc_flag.append("-gencode")\ncc_flag.append("arch=compute_70,code=sm_70")\n'
                                   'if True:\n    cc_flag.append("-gencode")\n    cc_flag.append("arch=compute_90,code=sm_90")\n'
                                   'print(cc_flag, ["-O3", "-std=c++17"])\n')
    args = ["--official-root", str(tmp_path), "--family", "spatial_mamba", "--patch-only"]
    assert build_official.main(args) == 0
    assert (scan / "csrc" / "scan.cuh").read_text() == \
        "void f() {\n    __syncthreads();\n    int lane = (threadIdx.x % 32);\n}\n"
    setup = (scan / "setup.py").read_text()
    assert "-gencode\")" not in setup and setup.count("pass  # -gencode arch=compute_") == 2
    compile(setup, "setup.py", "exec")  # the if whose whole body was a pair still has one
    # at::NoGradGuard's header, which <ATen/ATen.h> no longer brings in
    launch = (dwconv / "launch.cu").read_text().splitlines()
    assert launch[0].startswith("#include <ATen/core/grad_mode.h>") and launch[1:] == \
        ["#include <ATen/ATen.h>", "void f() {", "    at::NoGradGuard no_grad;", "}"]
    # C++20 where the installed torch's headers demand it (the tested torch 2.14's do)
    cxx20 = build_official.needs_cxx20()
    assert ("-std=c++20" in setup) == cxx20 and ("-std=c++17" in setup) != cxx20
    out = capsys.readouterr().out
    assert "fixed 2 file(s)" in out and "fixed 1 file(s) (launch.cu)" in out
    assert build_official.main(args) == 0
    assert "fixed 0 file(s)" in capsys.readouterr().out
    assert build_official.main(["--official-root", str(tmp_path / "none"), "--patch-only"]) == 2


def test_bench_graph_reads_its_setting_and_needs_a_gpu(capsys):
    """bench_graph.py times CUDA graphs (GPU only); what CI can check is its --set parsing and its refusals."""
    from ssm_kernels.triton import ops as tops
    module, name, values = bench_graph.parse_setting("ops.PROGRAMS_PER_SM=4,8")
    assert (module, name, values) == (tops, "PROGRAMS_PER_SM", [4, 8])
    for bad, says in [("ops.NO_SUCH=1", "no int constant"), ("no_such.X=1", "no module"),
                      ("ops.PROGRAMS_PER_SM=four", "integers")]:
        with pytest.raises(ValueError, match=says):
            bench_graph.parse_setting(bad)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_info:
            bench_graph.main(["--model", "vmamba_tiny"])
        assert exit_info.value.code == 2 and "needs a CUDA GPU" in capsys.readouterr().err


def test_bench_fusion_floor_reads_every_weight_in_every_program(capsys):
    """The floor kernel (interpreter on CPU) reads all the weights in each program; the stages' shapes are the model's."""
    import timm
    weights = torch.randn(5000, device="cuda" if torch.cuda.is_available() else "cpu").half()
    sums = bench_fusion_floor.read_weights(weights, 3)
    torch.testing.assert_close(sums, weights.float().sum().expand(3), rtol=1e-4, atol=1e-2)
    model = timm.create_model("vmamba_tiny", dims=(16, 32, 32, 32), depths=(1, 1, 1, 1))
    rows = bench_fusion_floor.stage_shapes(model, 96, 2)
    # out_proj dim x dim (ssm_ratio 1), fc1 and fc2 dim x 4 dim each
    assert [r[:4] for r in rows] == [(0, 2 * 24 ** 2, 16, 9 * 16 ** 2), (1, 2 * 12 ** 2, 32, 9 * 32 ** 2),
                                     (2, 2 * 6 ** 2, 32, 9 * 32 ** 2), (3, 2 * 3 ** 2, 32, 9 * 32 ** 2)]
    with pytest.raises(SystemExit) as exit_info:
        bench_fusion_floor.main(["--sizes", "512", "16"])
    assert exit_info.value.code == 2 and "--sizes must be at least 32" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_info:
            bench_fusion_floor.main([])
        assert exit_info.value.code == 2 and "needs a CUDA GPU" in capsys.readouterr().err
