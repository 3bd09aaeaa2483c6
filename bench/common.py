"""Timing, memory and machine helpers shared by the benchmarks."""
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class Figure:
    """One measured number: median and spread over repeats, and its target if it has one."""

    name: str
    median: float
    unit: str
    spread: tuple[float, float] = (float("nan"), float("nan"))  # p25, p75
    target: str = ""
    ratio: Optional[float] = None
    passed: Optional[bool] = None
    note: str = ""

    def row(self) -> dict:
        return asdict(self)


def summary(samples: list[float]) -> tuple[float, tuple[float, float]]:
    values = np.asarray(samples, dtype=float)
    return float(np.median(values)), (float(np.percentile(values, 25)), float(np.percentile(values, 75)))


def repeat(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each call after warm-up."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def figure(name: str, samples: list[float], unit: str, scale: float = 1.0, **kw) -> Figure:
    median, (p25, p75) = summary([s * scale for s in samples])
    return Figure(name, median, unit, (p25, p75), **kw)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict:
    import faiss
    import open_clip
    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "faiss": faiss.__version__,
        "open_clip": open_clip.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
    }


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        print(f"  {fig.name}: {fig.median:.4g} {fig.unit}"
              + (f"  [{fig.target}: {'PASS' if fig.passed else 'FAIL'}, ratio {fig.ratio:.3g}]" if fig.target else ""),
              flush=True)
        return fig

    def ratio(self, name: str, numerator: Figure, denominator: Figure, target: str, minimum: float,
              note: str = "") -> Figure:
        value = numerator.median / denominator.median
        return self.add(Figure(name, value, "x", target=target, ratio=value, passed=value >= minimum, note=note))
