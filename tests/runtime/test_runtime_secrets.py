"""S3 credentials handed to Ray workers never reach Ray's session logs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ray
def test_secret_is_not_in_ray_session_logs(ray_cluster):
    import ray

    @ray.remote
    def pid():
        return os.getpid()

    ray.get(pid.remote())
    session = Path(ray._private.worker._global_node.get_session_dir_path())  # noqa: SLF001 - no public API
    needle = f'"AWS_SECRET_ACCESS_KEY": "{os.environ["AWS_SECRET_ACCESS_KEY"]}"'.encode()
    leaks = [str(f) for f in (session / "logs").rglob("*") if f.is_file() and needle in f.read_bytes()]
    assert not leaks, leaks
