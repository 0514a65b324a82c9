"""Shared helpers for the benchmark scripts: header line, tables, timing and peak-memory measurement.

Peak memory
- GPU: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus what was
  allocated before the measured call: exact bytes of tensors, in the same process.
- CPU: tracemalloc does not see torch's allocations, and a process's peak RSS never goes down, so
  each measurement runs in a fresh subprocess (the scripts' `--worker` mode). There the peak-RSS
  mark (VmHWM) is reset just before the measured call by writing "5" to /proc/self/clear_refs
  (Linux ≥ 4.0), and the growth VmHWM − VmRSS(before) is reported. Where that reset is not
  allowed, the growth of `resource.getrusage(RUSAGE_SELF).ru_maxrss` is used instead; it is
  then an upper bound only for calls that peak above everything the set-up did (said in the
  output as `peak method`).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------- header


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or "CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def header(title: str, device: torch.device, extra: str = "") -> str:
    import transformers

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "",
             f"date {now} · device {device_name(device)} · torch {torch.__version__} · "
             f"transformers {transformers.__version__} · python {platform.python_version()}"]
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def _fmt(x) -> str:
    if isinstance(x, float):
        if x != x:
            return "–"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.2f}"
    return str(x)


# --------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved_medians(fns: dict, device: torch.device, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall seconds per variant; variants alternate (rotated order) so CPU noise hits all alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(timed(fns[n], device))
    return {n: statistics.median(t) for n, t in times.items()}


# --------------------------------------------------------------------------- memory


def _status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0])
    return out


class PeakMemory:
    """Peak memory growth of one call: CUDA allocated bytes on GPU, process RSS on CPU (see module doc)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = ""
        self.peak_mb = float("nan")

    def __enter__(self):
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return self
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._before = _status_kb()["VmRSS"]
            self.method = "RSS high-water mark reset (/proc/self/clear_refs)"
        except OSError:
            self._before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.method = "ru_maxrss growth"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._before
            self.peak_mb = peak / 2**20
        elif self.method.startswith("RSS"):
            self.peak_mb = (_status_kb()["VmHWM"] - self._before) / 1024
        else:
            self.peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._before) / 1024
        return False


def run_worker(script: Path, args: list[str], timeout: float = 1800) -> dict:
    """Run `script --worker ARGS` in a fresh interpreter; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, str(script), "--worker", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"worker {script.name} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def load_average() -> str:
    """1/5/15-minute load average: the machine is shared, so say how busy it was."""
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
