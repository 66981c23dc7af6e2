"""Measuring a job run as its own process, as cron runs it: wall time and peak memory, for the benchmarks.

Peak memory is measured two ways, because the kernel keeps a maximum per process, not a sum: the
resident set of the process (``ru_maxrss`` from ``os.wait4``, which covers its waited-for children too)
and the sum of the resident sets of its process tree, sampled from /proc. MB are MiB, as ps and top count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def job_env(url: str, database: str) -> dict[str, str]:
    """The environment cron would give a job: connection in INFLUX_* variables, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
    env.update(INFLUX_URL=url, INFLUX_DATABASE=database)
    return env


def descendants(root: int) -> set[int]:
    """The processes below ``root`` (not itself), from /proc; racy, so best effort."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(b")", 1)[1].split()[1]), []).append(int(entry))
    found: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def tree_rss_bytes(root: int, include_root: bool = True) -> int:
    """Resident memory of a process's descendants, and of itself with ``include_root``, summed."""
    total = 0
    for pid in descendants(root) | ({root} if include_root else set()):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


class TreeRssSampler(threading.Thread):
    """Largest ``tree_rss_bytes`` of a process seen, sampled every ``period_s`` until ``stop()``."""

    def __init__(self, pid: int, period_s: float, include_root: bool):
        super().__init__(daemon=True)
        self.pid, self.period_s, self.include_root, self.peak = pid, period_s, include_root, 0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid, self.include_root))
            self._stopped.wait(self.period_s)

    def stop(self) -> int:
        self._stopped.set()
        self.join()
        return self.peak


# Runs the job given after the result path and writes its exit code, wall time and ru_maxrss there. The
# job is spawned from this small interpreter, not from the benchmark: Linux counts the memory of the
# process a child is spawned from, up to its exec, in the child's ru_maxrss, and the benchmark process
# holds TensorFlow. wait4 gives the rusage of that one child, where RUSAGE_CHILDREN would mix in others.
LAUNCHER = """
import json, os, sys, time
began = time.monotonic()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall_s = time.monotonic() - began
with open(sys.argv[1], "w") as f:
    json.dump({"exit_code": os.waitstatus_to_exitcode(status), "wall_s": wall_s, "maxrss_kib": usage.ru_maxrss}, f)
"""


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_mb: float
    rusage_mb: float
    sampled_mb: float


def measure(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Measurement:
    """Run one command as a process through LAUNCHER: its wall time, and the peak RSS of it (the larger of
    its ru_maxrss and of its process tree's sum, sampled every 50 ms). Raises RuntimeError unless it exits 0."""
    result_path = log.with_suffix(".result.json")
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result_path), *command],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        sampler = TreeRssSampler(launcher.pid, period_s=0.05, include_root=False)
        sampler.start()
        launcher.wait()
        sampled = sampler.stop()
    if launcher.returncode != 0:
        raise RuntimeError(f"the launcher of {Path(command[1]).name} exited with {launcher.returncode}:\n{tail(log)}")
    result = json.loads(result_path.read_text())
    if result["exit_code"] != 0:
        raise RuntimeError(f"{Path(command[1]).name} exited with {result['exit_code']}:\n{tail(log)}")
    rusage_mb = result["maxrss_kib"] / 1024
    sampled_mb = sampled / 2**20
    return Measurement(
        round(result["wall_s"], 3), round(max(rusage_mb, sampled_mb), 1), round(rusage_mb, 1), round(sampled_mb, 1)
    )


@dataclass(frozen=True)
class Usage:
    """A process run by ``run``: exit code, wall time, CPU time (user + system), ru_maxrss and the peak
    of its process tree's summed RSS (sampled), in seconds and MiB."""

    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    tree_peak_mb: float


def run(command: list[str], env: dict[str, str], cwd: Path, log: Path, period_s: float) -> Usage:
    """Spawn ``command`` from this process, its output to ``log``; wall time from spawn to exit, rusage from
    os.wait4, the process and its descendants sampled every ``period_s``. Any exit code is returned."""
    began = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    sampler = TreeRssSampler(process.pid, period_s=period_s, include_root=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.monotonic() - began
    peak = sampler.stop()
    # Reaped here, so tell Popen, which would otherwise wait for it again.
    process.returncode = os.waitstatus_to_exitcode(status)
    return Usage(process.returncode, wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, peak / 2**20)


def run_checked(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> float:
    """Run ``command`` as a process, its output to ``log``; its wall time in seconds. Raises RuntimeError with
    the end of the log unless it exits 0."""
    began = time.monotonic()
    with open(log, "wb") as out:
        code = subprocess.run(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    if code != 0:
        raise RuntimeError(f"{Path(command[1]).name} exited with {code}:\n{tail(log)}")
    return time.monotonic() - began


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
