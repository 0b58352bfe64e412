"""Decoding untrusted files under a memory and time budget that no decoder can exceed.

Why a process: header checks (:mod:`medxfer.data.decode.header`, the DICOM frame and palette
checks) refuse what a format *says* it will allocate, but a decoder can still allocate more than
its header says (a deflated DICOM dataset, a corrupt stream, the next format's quirk). The only
bound that holds for every decoder medxfer uses — OpenCV, Pillow, pydicom and its pixel-data
plug-ins (pylibjpeg, Pillow's JPEG / JPEG 2000, RLE), palette lookup tables — is one the
operating system enforces. So files are decoded *and preprocessed* (resize, channels, CLAHE,
normalisation) in a worker process whose data segment is capped with ``RLIMIT_DATA`` at its own
size after imports plus ``data.max_decode_bytes``, and whose time per file is capped by
``data.decode_timeout_s`` (a real-time timer whose signal ends the process). Only the small
output-sized arrays come back.

``RLIMIT_DATA`` and not ``RLIMIT_AS``: since Linux 4.7 it counts every private writable mapping —
numpy's, OpenCV's and the decoders' large blocks come from ``mmap`` — but not shared libraries,
thread-stack guard reservations or malloc's address-space reservations, so the budget is memory
a decode can fill, not address space. An allocation beyond it fails in the decoder: numpy, Pillow
and pydicom raise ``MemoryError``, OpenCV its out-of-memory error (both are caught here); a C
library that aborts instead ends the worker.

What becomes of a file (one bad row each, the batch goes on):

- over the budget: "exceeds the decode memory budget of N bytes (data.max_decode_bytes)";
- over the time: "took longer than data.decode_timeout_s (N s) to decode";
- the worker dies on it (a segfault, an abort, a SIGKILL from the out-of-memory killer):
  "the decoder crashed (SIGSEGV)".

The parent learns which file was being decoded from a shared counter the worker sets before each
file. A file that ran out of time is a bad file at once (a second try would spend the time again);
when the worker died, that file alone is retried in a fresh worker (a death that is not the file's
fault, such as another process's memory pressure, then passes), and it is a bad file when it kills
that one too. The files the dead worker had finished are decoded again; the rest of the batch goes
on in the fresh worker. Workers are forked from a fork server that imported the
decoders once, so a fresh worker costs milliseconds.

Running out of memory in *this* process (the command, a Ray task) is not a file's fault and is
raised as before. Everything medxfer decodes from untrusted bytes goes through
:func:`preprocess_files`: both preprocessing engines (threads, Ray Data tasks) and both
prediction engines.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import popen_forkserver
from typing import NamedTuple

import numpy as np

from medxfer.data.decode import read_header
from medxfer.data.decode.common import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS
from medxfer.data.preprocess import preprocess_image
from medxfer.errors import ImageDecodeError

log = logging.getLogger("medxfer.data")

DEFAULT_MAX_DECODE_BYTES = 1536 * 1024**2  # DataConfig.max_decode_bytes overrides it; see its description
DEFAULT_DECODE_TIMEOUT_S = 60.0  # DataConfig.decode_timeout_s overrides it
#: Fault injection for tests, read from the environment when a worker starts: a file whose bytes hold
#: this marker makes the worker kill itself with SIGSEGV (no decoder here is known to crash).
CRASH_MARKER_ENV = "MEDXFER_TEST_DECODER_CRASH_MARKER"
EXIT_OVER_BUDGET = 86  # a worker's exit status when a file's bytes alone do not fit its budget
RESULT_SHARE = 8  # the results of one call to a worker take at most 1/RESULT_SHARE of its budget
_GRACE_S = 30.0  # beyond files x timeout, how long the parent waits before it kills a silent worker
_RESTARTS_WITHOUT_PROGRESS = 2  # fresh workers that die before starting a file: then the machine is at fault


@dataclass(frozen=True)
class DecodeLimits:
    """What one file may cost: the header limits (pixels, decoded bytes), the decode's memory and its time."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    timeout_s: float = DEFAULT_DECODE_TIMEOUT_S

    @classmethod
    def of(cls, data_cfg) -> DecodeLimits:
        """The limits a :class:`~medxfer.config.DataConfig` sets."""
        return cls(int(data_cfg.max_pixels), int(data_cfg.max_image_bytes), int(data_cfg.max_decode_bytes),
                   float(data_cfg.decode_timeout_s))


class Prepared(NamedTuple):
    """One file's outcome: its tensor and the stored image's facts, or the reason it is a bad file."""

    array: np.ndarray | None
    reason: str | None = None
    height: int = 0
    width: int = 0
    fmt: str = ""
    color: bool = False


class SandboxBug(RuntimeError):
    """Preprocessing failed in a way no file should cause (a bug, not a bad file): the job fails."""


def budget_reason(limits: DecodeLimits) -> str:
    return (f"exceeds the decode memory budget of {limits.max_decode_bytes:,} bytes (data.max_decode_bytes); "
            "raise it if the file is genuine")


def timeout_reason(limits: DecodeLimits) -> str:
    return (f"took longer than data.decode_timeout_s ({limits.timeout_s:g} s) to decode; stopped "
            "(raise it if the file is genuine)")


def oversized_reason(e) -> str:
    """The bad-file reason for a file storage refused to read (a :class:`~medxfer.storage.TooLarge`)."""
    return f"{e.reason} (data.max_image_bytes; raise it if the file is genuine)"


def crash_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return f"the decoder was killed ({name}, e.g. by the out-of-memory killer) while decoding it, twice"
        return f"the decoder crashed ({name}) while decoding it, twice"
    return f"the decoder exited (status {exitcode}) while decoding it, twice"


# ----------------------------------------------------------------------------- the worker process


def _vm_data() -> int:
    """This process's data segment (``VmData``), the quantity ``RLIMIT_DATA`` caps, in bytes."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _cap_memory(budget: int) -> int:
    """Cap this process's data segment at its present size plus ``budget``; returns the baseline."""
    import resource

    base = _vm_data()
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = base + budget if hard == resource.RLIM_INFINITY else min(hard, base + budget)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    return base


def _silence() -> None:
    """Nothing the decoders print reaches the command's output: their warnings can quote header text."""
    import warnings

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")


def _memory_caused(e: BaseException) -> bool:
    """Whether ``e`` or an exception it replaced was an allocation failing (the budget reached)."""
    from medxfer.data.decode.common import out_of_memory

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if out_of_memory(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


_BASE = [0]  # the worker's data segment after start-up: its budget is counted from there


def _beyond_budget(data, path: str, limits: DecodeLimits) -> bool:
    """Whether a decode that failed was short of memory rather than broken.

    Decoders turn a failed allocation into their own error (OpenCV's WebP and JPEG 2000 readers
    return nothing; Pillow's says "broken data stream"); so a failed decode is put down to the budget
    when the file's bytes and twice its decoded size (the decoder's buffer and the array it becomes)
    would not fit in what is left of it."""
    try:
        h = read_header(data, path)
    except (ImageDecodeError, MemoryError):
        return False
    need = len(data) + 2 * (h.nbytes // max(1, h.frames))
    return need > limits.max_decode_bytes - (_vm_data() - _BASE[0])


def _one(data, path: str, job, limits: DecodeLimits, crash: bytes | None) -> tuple:
    """One file in the worker: ``("ok", array or None, h, w, fmt, colour)``, ``("bad", reason)`` or
    ``("bug", text)``. ``job``: a PreprocessConfig (decode and preprocess), or None (read the header only)."""
    if crash and crash in bytes(data):
        os.kill(os.getpid(), signal.SIGSEGV)
    try:
        if job is None:
            h = read_header(bytes(data), path)
            return ("ok", None, h.height, h.width, h.fmt, h.color)
        arr, d = preprocess_image(data, job, path, limits.max_pixels, limits.max_image_bytes)
    except ImageDecodeError as e:
        return ("bad", budget_reason(limits) if _memory_caused(e) or _beyond_budget(data, path, limits) else e.reason)
    except Exception as e:  # noqa: BLE001 - sorted below: the budget, or a bug
        if _memory_caused(e):
            return ("bad", budget_reason(limits))
        import traceback

        return ("bug", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    return ("ok", arr, d.header.height, d.header.width, d.fmt, d.color)


def _serve(conn, progress, budget: int, crash: bytes | None) -> None:
    """The worker's loop: a call's paths and sizes, then all its files' bytes in one message (one
    read, not one per file); the results once the call is done."""
    from medxfer.config import PreprocessConfig

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the time budget: the timer's signal ends the process
    _silence()
    base = _BASE[0] = _cap_memory(budget)
    specs: dict[str, PreprocessConfig] = {}
    while True:
        try:
            spec_json, limits, paths, sizes = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        spec = None
        if spec_json is not None:
            spec = specs.get(spec_json) or specs.setdefault(spec_json, PreprocessConfig.model_validate_json(spec_json))
        try:
            blob = memoryview(conn.recv_bytes())
        except MemoryError:
            os._exit(EXIT_OVER_BUDGET)  # the files' bytes alone exceed the budget; the pipe is mid-message
        out, arrays, at = [], [], 0
        for k, (path, size) in enumerate(zip(paths, sizes, strict=True)):
            progress[0] = k
            signal.setitimer(signal.ITIMER_REAL, limits.timeout_s)  # each file's own time (re-armed, not stopped)
            r = _one(blob[at : at + size], path, spec, limits, crash)
            if r[0] == "ok" and r[1] is not None:
                arrays.append(r[1])
                r = ("ok", None, *r[2:])
            out.append(r)
            at += size
        signal.setitimer(signal.ITIMER_REAL, 0)
        del blob
        progress[0] = len(paths)
        # The tensors travel as one array (one buffer to pickle, not one object per file).
        conn.send((out, np.stack(arrays) if arrays else None, _vm_data() - base))


class _Died(Exception):
    def __init__(self, index: int, exitcode: int | None, timed_out: bool):
        super().__init__(index, exitcode, timed_out)
        self.index, self.exitcode, self.timed_out = index, exitcode, timed_out


def _context():
    """The fork-server context whose server has imported the decoders (forks then cost milliseconds)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["medxfer.data.decode._preload"])
    return ctx


class _Popen(popen_forkserver.Popen):
    """CPython 3.11's ``popen_forkserver.Popen._launch``, less the parent's ``__main__``.

    Python's fork server re-imports the parent's main script in every child it starts; in a Ray
    worker that is Ray's ``default_worker.py``, a second of imports per decode worker. A decode
    worker needs only what the server preloaded, so the preparation data goes without it."""

    def _launch(self, process_obj):
        from multiprocessing import context, reduction, spawn, util
        from multiprocessing.forkserver import connect_to_new_process, read_signed

        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = read_signed(self.sentinel)


class _SandboxProcess(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        return _Popen(process_obj)


class Worker:
    """One decode worker process and the parent's end of its pipe."""

    def __init__(self, budget: int):
        ctx = _context()
        self.budget = budget
        self.conn, child = ctx.Pipe(duplex=True)
        self.progress = ctx.RawArray("q", 1)
        crash = os.environ.get(CRASH_MARKER_ENV, "").encode() or None
        self.proc = _SandboxProcess(target=_serve, args=(child, self.progress, budget, crash), daemon=True,
                                    name="medxfer-decode")
        self.proc.start()
        child.close()
        self.retained = 0

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def run(self, spec_json: str | None, limits: DecodeLimits, items: Sequence[tuple[str, bytes]]) -> list[tuple]:
        """The worker's result for each item, in order; raises :class:`_Died` naming the item it died on."""
        self.progress[0] = -1
        try:
            self.conn.send((spec_json, limits, [p for p, _ in items], [len(d) for _, d in items]))
            self.conn.send_bytes(items[0][1] if len(items) == 1 else b"".join(d for _, d in items))
            if not self.conn.poll(len(items) * limits.timeout_s + _GRACE_S):
                self.proc.kill()  # silent past every file's time: its timer could not end it
                raise _Died(max(0, int(self.progress[0])), None, timed_out=True)
            out, stack, self.retained = self.conn.recv()
            if stack is not None:
                arrays = iter(stack)
                out = [("ok", next(arrays), *r[2:]) if r[0] == "ok" else r for r in out]
            return out
        except (EOFError, OSError):
            self.proc.join(5)
            if self.proc.exitcode is None:
                self.proc.kill()
                self.proc.join(5)
            code = self.proc.exitcode
            raise _Died(int(self.progress[0]), code, code == -signal.SIGALRM) from None

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)


_IDLE: dict[int, list[Worker]] = {}
_LOCK = threading.Lock()


@contextmanager
def _lease(budget: int) -> Iterator[list[Worker]]:
    """A worker for this thread (a one-element list, so a dead one can be replaced in place), returned
    to the idle pool afterwards unless it died or kept more than half its budget."""
    with _LOCK:
        idle = _IDLE.setdefault(budget, [])
        worker = idle.pop() if idle else None
    box = [worker if worker is not None and worker.alive else Worker(budget)]
    try:
        yield box
    except BaseException:
        box[0].close()  # interrupted mid-conversation (this process out of memory, Ctrl-C): never reused
        raise
    w = box[0]
    if w.alive and w.retained <= budget // 2:
        with _LOCK:
            _IDLE.setdefault(budget, []).append(w)
    else:
        w.close()


def shutdown() -> None:
    """Stop the idle workers (they also stop by themselves when this process ends)."""
    with _LOCK:
        workers = [w for ws in _IDLE.values() for w in ws]
        _IDLE.clear()
    for w in workers:
        w.close()


def _outcome(result: tuple, path: str) -> Prepared:
    kind = result[0]
    if kind == "ok":
        _, arr, h, w, fmt, colour = result
        return Prepared(arr, None, h, w, fmt, colour)
    if kind == "bad":
        return Prepared(None, result[1])
    first = result[1].splitlines()[0]
    log.debug("%s: preprocessing failed unexpectedly in the decode worker:\n%s", path, result[1])
    raise SandboxBug(f"{path}: preprocessing failed unexpectedly ({first[:300]}); run with -v for the traceback")


def preprocess_files(items: Sequence[tuple[str, bytes]], spec, limits: DecodeLimits) -> list[Prepared]:
    """Decode and preprocess ``(path, bytes)`` items in a budgeted worker; one :class:`Prepared` each, in order.

    ``spec``: the :class:`~medxfer.config.PreprocessConfig` (or its JSON). Bad files are outcomes,
    not exceptions; :class:`SandboxBug` for what no file should cause, and a RuntimeError when fresh
    workers keep dying before they start a file (the machine, not a file, is at fault)."""
    return _run(items, spec if isinstance(spec, str) else spec.model_dump_json(), limits)


def read_headers(items: Sequence[tuple[str, bytes]], limits: DecodeLimits) -> list[Prepared]:
    """What each file's header says (``fmt``, ``height``, ``width``, ``color``; no array), read in a
    budgeted worker like a decode: reading a header can inflate a whole deflated DICOM dataset."""
    return _run(items, None, limits)


def _call(pending: list[int], items: Sequence[tuple[str, bytes]], most: int, share: int) -> list[int]:
    """The next items for one call: at most ``most`` of them, and files of at most ``share`` bytes in all
    (or the one file that is larger): a call's input and its results each take a share of the budget."""
    part, size = [], 0
    for i in pending[:most]:
        n = len(items[i][1])
        if part and size + n > share:
            break
        part.append(i)
        size += n
    return part


def _result_bytes(spec_json: str | None) -> int:
    """The bytes of one file's result: its tensor (a header's facts are a few bytes)."""
    if spec_json is None:
        return 256
    import json

    spec = json.loads(spec_json)
    channels = 3 if spec.get("channels") in (3, "auto") else 1
    return channels * int(spec.get("size", 64)) ** 2 * (2 if spec.get("dtype") == "float16" else 4) + 256


def _run(items: Sequence[tuple[str, bytes]], spec_json: str | None, limits: DecodeLimits) -> list[Prepared]:
    """Items in calls to a worker whose results fit its budget's share; a worker that dies is replaced."""
    if not items:
        return []
    results: list[Prepared | None] = [None] * len(items)
    pending = list(range(len(items)))
    fruitless = 0
    share = limits.max_decode_bytes // RESULT_SHARE
    per_call = max(1, share // _result_bytes(spec_json))
    with _lease(limits.max_decode_bytes) as box:
        while pending:
            part = _call(pending, items, per_call, share)
            try:
                out = box[0].run(spec_json, limits, [items[i] for i in part])
            except _Died as died:
                box[0].close()
                box[0] = Worker(limits.max_decode_bytes)
                alone_over = died.exitcode == EXIT_OVER_BUDGET and len(part) == 1  # its bytes did not fit
                if not (0 <= died.index < len(part) or alone_over):
                    fruitless += 1
                    if fruitless > _RESTARTS_WITHOUT_PROGRESS:
                        raise RuntimeError(f"decode workers died {fruitless} times before decoding a file (exit "
                                           f"status {died.exitcode}); the machine is short of memory or processes") from None
                    continue
                fruitless = 0
                culprit = pending.pop(max(0, died.index))
                # Out of time or memory: the budget is spent, a second try would spend it again.
                # Died: retried alone, since a death can come from outside (memory pressure).
                if died.timed_out:
                    results[culprit] = Prepared(None, timeout_reason(limits))
                elif died.exitcode == EXIT_OVER_BUDGET:
                    results[culprit] = Prepared(None, budget_reason(limits))
                else:
                    results[culprit] = _alone(box, spec_json, limits, items[culprit], died)
                continue
            for i, r in zip(part, out, strict=True):
                results[i] = _outcome(r, items[i][0])
            pending = pending[len(part) :]
    return results  # type: ignore[return-value]


def _alone(box: list[Worker], spec_json: str | None, limits: DecodeLimits, item: tuple[str, bytes], first: _Died) -> Prepared:
    """Retry the file a worker died on, alone, in a fresh worker: a bad file when it ends that one too
    (or runs out of time there)."""
    started = time.monotonic()
    try:
        return _outcome(box[0].run(spec_json, limits, [item])[0], item[0])
    except _Died as again:
        box[0].close()
        box[0] = Worker(limits.max_decode_bytes)
        log.debug("%s: the decode worker died on it twice (exit %s, then %s, %.1f s)", item[0], first.exitcode,
                  again.exitcode, time.monotonic() - started)
        if again.timed_out:
            return Prepared(None, timeout_reason(limits))
        return Prepared(None, crash_reason(again.exitcode))
