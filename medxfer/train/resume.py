"""Where a run's checkpoints live in its folder, and which one a run resumes from.

A run trained by a Ray Train worker group has Ray Train's own record: it writes checkpoint
folders ``<run>/epoch-NNNN/`` and ``checkpoint_manager_snapshot.json``, and restores them
itself. A run trained in the command's own process (``scaling.num_workers: 0``, Ray Train's
local mode) has no such record: local mode keeps only the last reported checkpoint object, in
memory. So in that mode medxfer keeps the checkpoints itself, in the same folder layout:
``epoch-NNNN/`` written in full first, then ``checkpoints.json`` naming it (the commit point:
a crash mid-write leaves an unnamed folder, never a record naming half a checkpoint), then the
folders beyond ``train.checkpoint.keep`` deleted.

``scaling`` does not shape the model, so one run may change mode between invocations. It
resumes from the newest checkpoint either record names (:func:`latest`): the driver hands that
one to the workers (:class:`RunCheckpoints`) unless it is Ray Train's own, which Ray restores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from medxfer import storage
from medxfer.errors import StorageError

log = logging.getLogger("medxfer.train")

SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record (worker groups)
RECORD = "checkpoints.json"  # medxfer's record (runs in the command's own process)


@dataclass(frozen=True)
class Found:
    """One complete checkpoint of a run: where, after which epoch, and whose record names it."""

    uri: str
    epoch: int
    ray: bool  # named by Ray Train's snapshot (Ray restores it) rather than by medxfer's record


@dataclass(frozen=True)
class RunCheckpoints:
    """What a worker needs to know about its run's checkpoints (travels in ``train_loop_config``).

    ``handed``: a checkpoint to resume from that Ray Train does not know about (None: Ray's own,
    or a new run). ``writes``: medxfer writes the checkpoints (local mode) instead of handing
    them to ``ray.train.report``.
    """

    run_uri: str
    keep: int
    handed: str | None = None
    writes: bool = False


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def has_checkpoints(run_uri: str) -> bool:
    return any(storage.exists(storage.join(run_uri, p)) for p in (SNAPSHOT, RECORD))


def _epoch(value: object) -> int | None:
    """An epoch number as a record wrote it: a whole number (JSON may give ``6.0``), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < 0:
        return None
    return int(value)


def _ray_latest(run_uri: str) -> Found | None:
    """The newest checkpoint in Ray Train's snapshot, if readable (its format is Ray's, not ours).

    Ray may change that format between releases, so anything unexpected in it (not JSON, no
    folder name, an epoch that is not a whole number) is reported and the snapshot passed over:
    the run then resumes from medxfer's own record, or starts anew.
    """
    uri = storage.join(run_uri, SNAPSHOT)
    try:
        latest = storage.read_json(uri).get("latest_checkpoint_result") or {}
        name, epoch = latest.get("checkpoint_dir_name"), (latest.get("metrics") or {}).get("epoch")
    except storage.NotFound:
        return None
    except (StorageError, AttributeError) as e:
        log.warning("%s: cannot read Ray Train's checkpoint record (%s); its checkpoints are not considered", uri, e)
        return None
    if name is None and epoch is None:
        return None  # Ray Train has not recorded a checkpoint yet
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or _epoch(epoch) is None:
        log.warning("%s: cannot read Ray Train's checkpoint record (checkpoint %r, epoch %r); its checkpoints "
                    "are not considered", uri, name, epoch)
        return None
    return Found(storage.join(run_uri, name), _epoch(epoch), ray=True)


def _record(run_uri: str) -> list[dict]:
    """medxfer's own record, each entry checked: a hand-edited or damaged one is refused with the fix."""
    uri = storage.join(run_uri, RECORD)
    try:
        raw = storage.read_bytes(uri)
    except storage.NotFound:
        return []
    try:
        entries = json.loads(raw).get("checkpoints", [])
    except (ValueError, AttributeError):  # not JSON (hand-edited, truncated in a copy), or not an object
        entries = None

    def valid(e: object) -> bool:
        epoch = _epoch(e.get("epoch")) if isinstance(e, dict) else None
        return epoch is not None and e.get("name") == checkpoint_name(epoch)

    if not isinstance(entries, list) or not all(valid(e) for e in entries):
        raise StorageError(f'{uri}: this checkpoint record is damaged (each entry must read {{"name": "epoch-NNNN", '
                           f'"epoch": N}}, oldest first). Fix it to name the epoch-NNNN folders that are complete, '
                           f"or give the run a new name to train it anew")
    return [{"name": e["name"], "epoch": _epoch(e["epoch"])} for e in entries]


def latest(run_uri: str) -> Found | None:
    """The newest complete checkpoint of the run, from either record; None for a run without one."""
    found = [_ray_latest(run_uri)] + [Found(storage.join(run_uri, e["name"]), e["epoch"], ray=False)
                                      for e in _record(run_uri)[-1:]]
    found = [f for f in found if f is not None]
    return max(found, key=lambda f: (f.epoch, f.ray)) if found else None


def publish(directory: str, run_uri: str, epoch: int, keep: int) -> str:
    """Copy the checkpoint folder ``directory`` into the run as ``epoch-NNNN``, record it, prune; its URI."""
    name = checkpoint_name(epoch)
    dest = storage.join(run_uri, name)
    storage.copy_tree(directory, dest)
    entries = [e for e in _record(run_uri) if e["name"] != name] + [{"name": name, "epoch": epoch}]
    kept, dropped = entries[-keep:], entries[:-keep]
    storage.write_json(storage.join(run_uri, RECORD), {"checkpoints": kept})
    for e in dropped:  # after the record, which no longer names them
        storage.delete(storage.join(run_uri, e["name"]), recursive=True)
    return dest


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local folder holding the checkpoint at ``uri``: the folder itself when local, else a temporary copy."""
    from medxfer.train.checkpoint import STATE  # imports torch: only when a checkpoint is read

    with contextlib.ExitStack() as stack:
        d = storage.local_dir(uri)
        if d is None:
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="medxfer-ckpt-"))
            storage.copy_tree(uri, d)
        if not os.path.exists(os.path.join(d, STATE)):
            raise StorageError(f"{uri}: this checkpoint is missing or incomplete (no {STATE}). Delete its entry "
                               f"from the run folder's {RECORD} to resume from an older one, or train a new run")
        yield d
