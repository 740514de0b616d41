"""What the benchmarks print about the machine they ran on (shared by every script here)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """One line: platform, CPU, logical CPUs and memory."""
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM"
    except ImportError:  # pragma: no cover
        mem = "RAM unknown"
    return f"machine: {platform.platform()}; {cpu_model()}; {os.cpu_count()} CPUs; {mem}"


def versions_line(*modules: str) -> str:
    """``python X, numpy Y, ...``: the versions of the named importable modules (numba with its threads)."""
    import importlib

    parts = [f"python {platform.python_version()}"]
    for name in modules:
        mod = importlib.import_module(name)
        extra = f" ({mod.get_num_threads()} threads)" if name == "numba" else ""
        parts.append(f"{name} {getattr(mod, '__version__', '?')}{extra}")
    return ", ".join(parts)


def load_line(when: str = "start") -> str:
    """``load average at <when>: 1, 5, 15 min``."""
    return f"load average at {when}: {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
