"""How many torch CPU threads a training step uses when `train.threads=0` (the default): the cores others leave free.

torch starts one OpenMP thread per core, and each parallel region ends at a barrier. When another process keeps a
core busy, every region then waits for the thread that lost its core: on the 2-core development machine a step took
3.5x as long with one busy neighbour (benchmarks/bench_busy.py; once 303 s instead of ~15 s). One thread fewer per
busy neighbour removes the wait, but on an idle machine it only loses speed. So `AdaptiveThreads` looks, before each
step, at how many cores other processes kept busy during the previous one (Linux `/proc/stat` minus this process's
own CPU time) and sets `torch.set_num_threads(usable cores - that, at least 1)`. It returns to all cores when the
neighbour goes.

Where it cannot measure (no /proc/stat, or a container that sees more CPUs in /proc/stat than it may use), it does
nothing and torch's default stays. `train.threads=N` fixes N threads instead.
"""

from __future__ import annotations

import os
import time

import torch


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _machine_sample() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, seconds of this process) so far, or None where /proc/stat does not
    describe exactly the CPUs this process may use."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    if cpus != usable_cores():
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in lines[0].split()[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = sum(os.times()[:2])  # user + system seconds of every thread of this process
    return busy, own


class AdaptiveThreads:
    """Call `update()` before each step: sets and returns torch's thread count (see the module docstring)."""

    def __init__(self) -> None:
        self.cores = usable_cores()
        self._last = _machine_sample()
        self._last_time = time.monotonic()
        self.busy_neighbours = 0  # cores other processes kept busy during the last step, rounded

    @property
    def active(self) -> bool:
        return self._last is not None

    def update(self) -> int:
        sample, now = _machine_sample(), time.monotonic()
        if sample is None or self._last is None or now - self._last_time < 0.05:
            return torch.get_num_threads()
        busy, own = sample[0] - self._last[0], sample[1] - self._last[1]
        others = max(0.0, busy - own) / (now - self._last_time)  # cores kept busy by other processes
        self._last, self._last_time = sample, now
        self.busy_neighbours = min(self.cores - 1, round(others))
        threads = max(1, self.cores - self.busy_neighbours)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads
