"""Results files of tools/benchmark.py: append, read, and pick the measurement a table shows."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the committed results of the standard run (batch 128, 224x224, fp16 autocast, eager)
BENCHMARK_FILE = ROOT / "results" / "benchmark.csv"

#: the columns of a results file, in order
FIELDS = ["date", "model", "impl", "mode", "img_s", "ms_per_img", "peak_gib", "batch_size", "batch_rule", "img_size",
          "dtype", "channels_last", "compile", "device", "torch", "triton", "host_ms", "note"]

#: the setting the zoo table, the README and the model cards quote
STANDARD = dict(batch_size=128, img_size=224, dtype="float16", compile="eager")


def append_rows(path, rows):
    """Append ``rows`` to a results file: CSV (header written once) or JSON (a list of rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        existing = json.loads(path.read_text()) if path.exists() and path.stat().st_size else []
        path.write_text(json.dumps(existing + list(rows), indent=1) + "\n")
        return
    fields = FIELDS
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            fields = next(csv.reader(f))
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if f.tell() == 0:
            writer.writeheader()
        writer.writerows(rows)


def read_results(path=BENCHMARK_FILE):
    """The rows of a results file (CSV or JSON) as dicts; [] when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _matches(row, setting):
    return all(str(row.get(key, "")) == str(value) for key, value in setting.items())


_PASS = re.compile(r"(; )?pass \d+ of \d+$")


def run_of(row) -> tuple:
    """The run a row belongs to: (date, device, note), the note without the "pass i of n" that ``benchmark.py
    --passes`` adds (the passes of one call are one run)."""
    return row["date"], row["device"], _PASS.sub("", row.get("note", "") or "")


def latest(rows, model, impl, mode, setting=STANDARD):
    """The rows of the latest run (:func:`run_of` the last such row) of ``model`` by ``impl`` in ``mode`` at
    ``setting``: several rows when the run measured it more than once (e.g. in several passes)."""
    found = [r for r in rows if r["model"] == model and r["impl"] == impl and r["mode"] == mode and _matches(r, setting)]
    if not found:
        return []
    # the run of the last such row of the latest date (a file lists runs in order)
    run = run_of([r for r in found if r["date"] == max(r["date"] for r in found)][-1])
    return [r for r in found if run_of(r) == run]


#: a measurement whose host needed at least this share of the step to issue it is bound by the host
HOST_BOUND = 0.9
#: what the mark of :func:`img_s` means, for a table's caption
HOST_BOUND_NOTE = (f"†: bound by the host, which took {HOST_BOUND:.0%} of the step or more to issue it, so the number "
                   "follows the machine's CPU")


def host_bound(rows) -> bool:
    """Whether any of the rows was bound by the host: its ``host_ms`` (the wall time to issue one step on an idle
    GPU, ``tools/benchmark.py``) at least ``HOST_BOUND`` of the step's time. Such a number follows the CPU."""
    return any(r.get("host_ms") not in (None, "")
               and float(r["host_ms"]) >= HOST_BOUND * float(r["ms_per_img"]) * int(r["batch_size"]) for r in rows)


def img_s(rows, mark: bool = False) -> str:
    """Images per second of the rows, as a value or the range of several runs; '—' for none. ``mark``: a † after
    a number bound by the host (:func:`host_bound`)."""
    values = sorted(float(r["img_s"]) for r in rows)
    if not values:
        return "—"
    low, high = round(values[0]), round(values[-1])
    return (f"{low}" if low == high else f"{low}–{high}") + (" †" if mark and host_bound(rows) else "")


def peak_gib(rows) -> str:
    """Peak GiB of the rows (the largest), '—' where not measured."""
    values = [float(r["peak_gib"]) for r in rows if r.get("peak_gib") not in (None, "")]
    return f"{max(values):.2f}" if values else "—"
