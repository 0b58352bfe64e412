"""The peak memory of a command and every process it starts (Ray's included), for tests and benchmarks.

Where the cgroup v1 memory controller can be written (root on this machine), the command runs in a
fresh memory cgroup and its ``memory.max_usage_in_bytes`` is the peak of the whole tree, page cache
included. Elsewhere the tree is sampled every 50 ms and the peaks (``VmHWM``) of all its processes
are summed: an upper bound, since not every process peaks at the same moment.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup/memory")


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int
    method: str  # "cgroup" or "summed VmHWM"
    seconds: float


def _cgroup_usable() -> bool:
    return (CGROUP_V1 / "memory.max_usage_in_bytes").exists() and os.access(CGROUP_V1, os.W_OK)


def _children() -> dict[int, int]:
    """pid -> parent pid for every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                out[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def _tree(root: int) -> set[int]:
    parents = _children()
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(args: list[str], env: dict, timeout: float, cwd=None) -> Measured:
    """Run ``args`` to completion; its exit status, output, and the peak memory of its process tree."""
    t0 = time.monotonic()
    if _cgroup_usable():
        group = CGROUP_V1 / f"medxfer-test-{uuid.uuid4().hex[:10]}"
        group.mkdir()
        try:
            wrapped = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *args]
            r = subprocess.run(wrapped, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
            seconds = time.monotonic() - t0
            peak = int((group / "memory.max_usage_in_bytes").read_text())
        finally:
            _remove(group)
        return Measured(r.returncode, r.stdout, r.stderr, peak, "cgroup", seconds)
    peaks: dict[int, int] = {}
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in _tree(proc.pid):
                peaks[pid] = max(peaks.get(pid, 0), _hwm(pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
    return Measured(proc.returncode, out, err, sum(peaks.values()), "summed VmHWM", time.monotonic() - t0)


def _remove(group: Path) -> None:
    """Remove the cgroup once the command's processes are gone (Ray's stop a moment after the driver);
    any left after 30 s are the command's own and are ended, by their ids."""
    deadline = time.monotonic() + 30
    while True:
        pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        if not pids:
            break
        if time.monotonic() > deadline:
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)
