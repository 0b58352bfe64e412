"""No Ray Data stage of medxfer retries without limit.

Ray Data runs a task whose process died again without limit, and restarts an actor without limit: one
file that killed its worker once held ``predict`` for ever. ``map_batches_bounded`` takes Ray's retry
options; this walks every module and fails on a ``map_batches`` call made past it, a bounded call that
names no limit, or a Ray Data read without one. (That the options bound the retries is
tests/data/test_data_cache_build.py::test_a_task_or_replica_whose_process_dies_is_retried_a_bounded_number_of_times.)
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "medxfer"
LIMITS = {"max_retries", "max_restarts"}


def _calls(name: str):
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if called == name:
                    yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", node


def test_every_ray_data_stage_has_a_retry_limit():
    raw = [where for where, _ in _calls("map_batches") if not where.startswith("medxfer/data/cache/blocks.py")]
    assert not raw, f"map_batches called past map_batches_bounded (Ray Data retries those without limit): {raw}"
    bounded = list(_calls("map_batches_bounded"))
    assert len(bounded) >= 4
    unlimited = [where for where, call in bounded if not LIMITS & {k.arg for k in call.keywords}]
    assert not unlimited, f"map_batches_bounded without max_retries / max_restarts: {unlimited}"
    reads = [(where, call) for name in ("read_parquet", "read_images", "read_binary_files")
             for where, call in _calls(name)
             if isinstance(call.func, ast.Attribute) and ast.unparse(call.func.value) == "ray.data"]
    assert reads
    unlimited_reads = [where for where, call in reads
                       if not any(k.arg == "ray_remote_args" and "max_retries" in ast.unparse(k.value)
                                  for k in call.keywords)]
    assert not unlimited_reads, f"Ray Data reads without ray_remote_args max_retries: {unlimited_reads}"
