#!/usr/bin/env python
"""Build the official repositories' CUDA kernels in place, for ``tools/benchmark.py --official``.

    python tools/build_official.py --official-root ~/official                  # every family checked out there
    python tools/build_official.py --official-root ~/official --family vmamba spatial_mamba --jobs 16
    python tools/build_official.py --official-root ~/official --patch-only     # the fixes below, no build

For each family of ``tools/official_models.py`` (``SOURCES``) whose checkout is under ``--official-root``, each of
its kernel folders is fixed for a current toolchain, then built with ``python setup.py build_ext --inplace``, then
one of its extensions is imported in a fresh process to show that it loads. The fixes, each a no-op where it does
not apply, so a second run changes nothing:

- CCCL 3 (CUDA 13) removed ``cub::CTA_SYNC()`` and ``cub::LaneId()``, which the selective-scan sources derived from
  Mamba's call: they become ``__syncthreads()`` and ``(threadIdx.x % 32)``.
- The setup scripts list ``-gencode`` pairs for old GPUs (sm_53 ... sm_87), some of which CUDA 13 no longer
  compiles: they are removed, and the build targets ``--arch`` (default: this machine's GPU) through
  ``TORCH_CUDA_ARCH_LIST``, which also makes it several times shorter.
- Mamba's and causal-conv1d's setup scripts first try to download a prebuilt wheel: ``*_FORCE_BUILD=TRUE``.
- Recent PyTorch headers (2.11's, 2.14's) no longer bring ``at::NoGradGuard`` in through ``<ATen/ATen.h>``, which
  Spatial-Mamba's dwconv2d relies on: a source that uses it gets ``#include <ATen/core/grad_mode.h>`` first.
- The setup scripts compile with ``-std=c++17``; recent PyTorch headers (2.14's) stop with ``#error C++20 or later
  compatible compiler is required``: where the installed PyTorch's do, ``-std=c++20`` (with it, nvcc 13.0 and gcc
  compile Spatial-Mamba's selective scan for sm_90 against torch 2.14).

A setup script's own imports must be installed (Spatial-Mamba's dwconv2d imports Cython). The build uses ``--jobs``
compiler processes (``MAX_JOBS``); a log per folder is written beside its ``setup.py``
(``build_official.log``). On a lent H200, host-bound models ran slower in the minutes after such an all-core build:
measure them first.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vmamba_zoo  # noqa: E402
from official_models import SOURCES, OfficialUnavailable, _family, find_checkout  # noqa: E402

#: source replacements for CCCL 3 (old, new)
SOURCE_FIXES = (("cub::CTA_SYNC()", "__syncthreads()"), ("cub::LaneId()", "(threadIdx.x % 32)"))
SOURCE_SUFFIXES = (".cu", ".cuh", ".h", ".hpp", ".cpp")
#: headers a source needs for a name it uses (name, header): the header is included first where it is missing
SOURCE_HEADERS = (("at::NoGradGuard", "ATen/core/grad_mode.h"),)
#: a ``-gencode`` pair as the setup scripts append it: two ``cc_flag.append`` lines
GENCODE = re.compile(r'^([ \t]*)cc_flag\.append\("-gencode"\)[ \t]*\n[ \t]*cc_flag\.append\("(arch=compute_\w+,code=sm_\w+)"\)'
                     r'[ \t]*\n', re.M)
#: what a pair becomes: a statement, as the pair may be the whole body of an ``if``
NO_GENCODE = r"\1pass  # -gencode \2 removed by tools/build_official.py: the build targets TORCH_CUDA_ARCH_LIST\n"
#: environment of every build: no download of prebuilt wheels (Mamba's and causal-conv1d's setup scripts)
BUILD_ENV = {"MAMBA_FORCE_BUILD": "TRUE", "CAUSAL_CONV1D_FORCE_BUILD": "TRUE"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", metavar="DIR", default=os.environ.get("OFFICIAL_ROOT"),
                        help="directory of the official checkouts (default: $OFFICIAL_ROOT)")
    parser.add_argument("--family", nargs="+", metavar="NAME", help=f"families to build (default: every one found): "
                        f"{', '.join(SOURCES)}")
    parser.add_argument("--arch", help="GPU architecture to build for, as TORCH_CUDA_ARCH_LIST (default: this GPU's)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel compiler processes (MAX_JOBS)")
    parser.add_argument("--patch-only", action="store_true", help="apply the fixes, build nothing")
    return parser.parse_args(argv)


def needs_cxx20() -> bool:
    """Whether the installed PyTorch's C++ headers refuse a standard older than C++20."""
    import torch
    header = Path(torch.__file__).parent / "include" / "torch" / "csrc" / "api" / "include" / "torch" / "all.h"
    return header.is_file() and "C++20 or later" in header.read_text(errors="replace")


def patch(folder: Path, cxx20: bool = False) -> list:
    """Apply the fixes to the sources and the setup script below ``folder`` (``cxx20``: the setup scripts' C++17 made
    C++20); the files changed."""
    changed = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix in SOURCE_SUFFIXES:
            text = path.read_text(errors="surrogateescape")
            fixed = text
            for old, new in SOURCE_FIXES:
                fixed = fixed.replace(old, new)
            for name, header in SOURCE_HEADERS:
                if name in fixed and f"<{header}>" not in fixed:
                    fixed = f"#include <{header}>  // added by tools/build_official.py: {name}\n" + fixed
        elif path.name == "setup.py":
            text = path.read_text()
            fixed = GENCODE.sub(NO_GENCODE, text)
            if cxx20:
                fixed = fixed.replace("-std=c++17", "-std=c++20")
        else:
            continue
        if fixed != text:
            path.write_text(fixed, errors="surrogateescape")
            changed.append(path)
    return changed


def default_arch() -> str:
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("no GPU here: pass --arch (e.g. 9.0) or --patch-only")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def build(folder: Path, arch: str, jobs: int) -> tuple:
    """(return code, seconds, the log's last lines) of the in-place build in ``folder``."""
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(jobs), **BUILD_ENV)
    log = folder / "build_official.log"
    start = time.time()
    with log.open("w") as out:
        code = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder, env=env,
                              stdout=out, stderr=subprocess.STDOUT).returncode
    lines = log.read_text(errors="replace").strip().splitlines()
    # a failed build ends in setuptools' traceback: its first compiler errors say why
    errors = [line for line in lines if "error" in line.lower() and not line.lstrip().startswith(("File ", "raise "))]
    tail = "\n    ".join((errors[:4] + ["..."] if code and errors else []) + lines[-8:])
    return code, time.time() - start, tail


def loads(folders, names) -> str:
    """The first of the extensions ``names`` that imports in a fresh process with ``folders`` on its path, or ''."""
    code = ("import importlib, sys\n"
            "import torch  # an extension links against torch's libraries, loaded by importing it\n"
            f"sys.path[:0] = {[str(f) for f in folders]!r}\n"
            f"for name in {list(names)!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception:\n"
            "        continue\n"
            "    print(name)\n"
            "    break\n")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    return found.splitlines()[-1] if found else ""


def checkouts(root, families) -> dict:
    """{family: its checkout} for the families asked for (default: every one with a checkout under ``root``)."""
    first_model = {}
    for name in vmamba_zoo.list_models():
        first_model.setdefault(_family(name), name)
    found = {}
    for family in families or SOURCES:
        if family not in SOURCES:
            raise SystemExit(f"unknown family {family!r}: one of {', '.join(SOURCES)}")
        try:
            found[family] = find_checkout(first_model[family], root)
        except OfficialUnavailable as err:
            if families:  # asked for by name: say why it is missing
                raise SystemExit(f"{family}: {err}")
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.official_root:
        print("pass --official-root DIR (or set OFFICIAL_ROOT): the directory of the official checkouts",
              file=sys.stderr)
        return 2
    found = checkouts(args.official_root, args.family)
    if not found:
        print(f"no official checkout of any family under {args.official_root}", file=sys.stderr)
        return 2
    arch = None if args.patch_only else (args.arch or default_arch())
    cxx20 = needs_cxx20()
    failed = 0
    for family, checkout in found.items():
        source = SOURCES[family]
        folders = [checkout / d for d in source.kernel_dirs]
        for folder in folders:
            changed = patch(folder, cxx20)
            print(f"{family}: {folder}: fixed {len(changed)} file(s)"
                  + (f" ({', '.join(str(p.relative_to(folder)) for p in changed)})" if changed else ""))
            if arch is None:
                continue
            code, seconds, tail = build(folder, arch, args.jobs)
            print(f"{family}: {folder}: built in {seconds:.0f} s" if code == 0 else
                  f"{family}: {folder}: build failed (exit {code}, {seconds:.0f} s; {folder / 'build_official.log'}):"
                  f"\n    {tail}")
            failed += code != 0
        if arch is not None and source.kernels:
            name = loads(folders, source.kernels)
            print(f"{family}: {name} imports" if name else f"{family}: none of {', '.join(source.kernels)} imports")
            failed += not name
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
