"""medxfer's allocator setting (medxfer.runtime.allocator): what it adds to a worker's environment, and
that it does what it is for in a real process — freed memory is reused, not faulted back in.

The behaviour test starts fresh Python processes (the setting is process-wide and, for a
process's own threads, must come before they allocate) in which a thread allocates and frees
64 MB in blocks of 8 to 48 MB, as a training step does with its activations, and measures how
much of it stays resident. (Page faults are not counted: with transparent huge pages, numpy's
large blocks fault 2 MB at a time, and the count says more about the kernel than the setting.)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from medxfer.runtime.allocator import TUNABLES, glibc_tunables, user_configured

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")

OURS = ":".join(f"{k}={v}" for k, v in TUNABLES.items())

CHURN = """
import json, os, sys, threading
import numpy as np
if sys.argv[1] == "mallopt":
    from medxfer.runtime.allocator import tune_this_process
    assert tune_this_process()
if sys.argv[1] == "mallopt_if_allowed":
    from medxfer.runtime.allocator import tune_this_process
    assert not tune_this_process()
SIZES = (48, 8, 8)  # MB: one above glibc's largest self-set threshold (32 MB), two below
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
out = {}
def step():
    before = rss()
    blocks = [np.ones(n << 20, dtype=np.uint8) for n in SIZES]
    del blocks
    out["kept_mb"] = (rss() - before) / 2**20
t = threading.Thread(target=step); t.start(); t.join()
print(json.dumps(out))
"""


def _kept_mb(how: str, **env: str) -> float:
    """MB of a freed 64 MB step that stayed with the process (resident) for the next step."""
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    proc = subprocess.run([sys.executable, "-c", CHURN, how], env={**base, **env}, capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["kept_mb"]


@glibc_only
def test_worker_environment_keeps_other_tunables_and_respects_a_persons_choice():
    assert glibc_tunables({}) == OURS
    assert glibc_tunables({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) == f"glibc.pthread.rseq=0:{OURS}"
    for chosen in ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, {"MALLOC_ARENA_MAX": "2"},
                   {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, {"MEDXFER_ALLOCATOR": "system"}):
        assert user_configured(chosen)
        assert glibc_tunables(chosen) is None, chosen


@glibc_only
def test_freed_memory_stays_for_the_next_step():
    """A thread frees 64 MB of blocks: with glibc's defaults it goes back to the kernel (and the
    next step faults it in again, page by page); with medxfer's setting, applied either way
    medxfer applies it (the environment a worker starts with, mallopt in the running command),
    it stays resident for reuse."""
    assert _kept_mb("none") < 16
    assert _kept_mb("none", GLIBC_TUNABLES=glibc_tunables({})) > 56
    assert _kept_mb("mallopt") > 56
    # A person's choice wins: nothing is applied.
    assert _kept_mb("mallopt_if_allowed", MEDXFER_ALLOCATOR="system") < 16


@glibc_only
def test_ray_workers_start_with_the_setting(ray_cluster):
    """init_ray passes the setting in the job's runtime environment; a worker process sees it."""

    @ray_cluster.remote(num_cpus=0.25)
    def seen() -> str | None:
        return os.environ.get("GLIBC_TUNABLES")

    assert OURS in (ray_cluster.get(seen.remote()) or "")
