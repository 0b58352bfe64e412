"""How medxfer's processes hand freed memory back to the operating system: not after every step.

Why: glibc's ``malloc`` returns a freed block at the top of its heap to the kernel once it
exceeds a small, self-adjusting threshold (a few times the largest block freed so far; tens of
MB). A ResNet-18 training step at 64 px allocates and frees a few hundred MB of activations, a
preprocessing task a few MB per decoded X-ray; so every step gave its memory back and the next
one took it again, page by page, each page zero-filled by the kernel. Measured on the development
machine (2-core VM): about 400,000 page faults per BreastMNIST 64 px epoch; the setting below
made a plain training loop 1.1-1.16x and a preprocessing loop 1.3-1.4x faster (benchmarks/README.md,
tables 0-2). In a thread (Ray Train runs ``train_func`` in one),
glibc's per-thread arenas unmap whole freed heaps whatever the threshold.

What medxfer sets, in glibc's own terms (``glibc.malloc.*`` tunables):

- ``trim_threshold`` 1 GiB: keep up to that much freed memory at the heap's top;
- ``mmap_threshold`` 256 MiB: blocks below it come from the heap, not a fresh mapping each;
- ``arena_max`` 1: every thread allocates from the main heap, governed by the two above.

The cost is memory a process already needed staying with it: after its largest step a process
holds that step's peak instead of returning it. Blocks above 256 MiB (a 190 MB float32 fundus
photo is below; larger ones are not) are still mapped and unmapped each time.

Where it applies: the ``medxfer`` command's own process (:func:`tune_this_process`, first thing
in the CLI: in-process training, the local preprocessing engine, evaluation), and every Ray
worker process a medxfer job starts (:func:`glibc_tunables`, passed in the job's runtime
environment by :func:`medxfer.runtime.init_ray`; glibc reads it when the process starts, before
any thread exists).

Only glibc is tuned. medxfer leaves the allocator alone on another C library, when a person
configures glibc's allocator themselves (``GLIBC_TUNABLES`` naming ``glibc.malloc``, the
``MALLOC_*_`` variables, or another allocator in ``LD_PRELOAD``), and with
``MEDXFER_ALLOCATOR=system``, which keeps glibc's defaults. (Setting ``MALLOC_TRIM_THRESHOLD_`` to
glibc's default value does not: any explicit threshold turns glibc's self-adjustment off, and
then every block over 128 KB is a fresh mapping: 11 million page faults and half the speed in a
4-epoch fine-tune here.)
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

TUNABLES = {
    "glibc.malloc.trim_threshold": 1 << 30,
    "glibc.malloc.mmap_threshold": 256 << 20,
    "glibc.malloc.arena_max": 1,
}
# mallopt(3) parameter numbers from <malloc.h>, for the process that is already running.
_MALLOPT = {"glibc.malloc.trim_threshold": -1, "glibc.malloc.mmap_threshold": -3, "glibc.malloc.arena_max": -8}
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "MALLOC_TOP_PAD_",
                  "LD_PRELOAD")  # LD_PRELOAD: another allocator (jemalloc, tcmalloc) replaces glibc's

_tuned = False


def _is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def user_configured(environ: Mapping[str, str]) -> bool:
    """True when the environment already chooses how memory is allocated: medxfer then stays out."""
    return (environ.get("MEDXFER_ALLOCATOR", "medxfer") == "system"
            or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
            or any(environ.get(k) for k in _USER_SETTINGS))


def glibc_tunables(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``GLIBC_TUNABLES`` value a new medxfer process should start with, keeping any other
    tunables already set; None when there is nothing to add (not glibc, or the person chose)."""
    environ = os.environ if environ is None else environ
    if not _is_glibc() or user_configured(environ):
        return None
    ours = ":".join(f"{k}={v}" for k, v in TUNABLES.items())
    theirs = environ.get("GLIBC_TUNABLES", "").strip(":")
    return f"{theirs}:{ours}" if theirs else ours


def tune_this_process() -> bool:
    """Apply :data:`TUNABLES` to the running process with ``mallopt(3)``; True when applied.

    Call it early: ``arena_max`` binds only threads that have not allocated yet, and the two
    thresholds govern the main heap, where the calling thread allocates."""
    global _tuned
    if _tuned:
        return True
    if not _is_glibc() or user_configured(os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _tuned = all(libc.mallopt(_MALLOPT[k], v) == 1 for k, v in TUNABLES.items())
    except (OSError, AttributeError):  # a libc without mallopt: nothing to tune
        return False
    return _tuned
