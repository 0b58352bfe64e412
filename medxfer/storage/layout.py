"""Where each kind of thing lives under one storage root."""

from __future__ import annotations

import os
from pathlib import Path

from medxfer.errors import ConfigError
from medxfer.storage.uri import LOCAL, join, local_path, normalize, scheme


def in_ray_job_folder(cwd: str | None = None) -> bool:
    """Whether this process runs in the folder Ray unpacked a job's ``--working-dir`` into
    (``<session>/runtime_resources/working_dir_files/_ray_pkg_<hash>``)."""
    parts = Path(cwd or os.getcwd()).parts
    return "runtime_resources" in parts and "working_dir_files" in parts


def check_root(root: str) -> None:
    """Refuse a relative local root inside a Ray job's working directory.

    Why: ``ray job submit --working-dir .`` runs the command in a folder Ray unpacked for this
    job, named after a hash of the code and deleted by Ray's garbage collection: the cache,
    checkpoints and bundle would land there, and the next submission (another hash after any code
    change) would not find them, so "the same name resumes" silently breaks.
    """
    if scheme(root) == LOCAL and not os.path.isabs(local_path(root)) and in_ray_job_folder():
        raise ConfigError([
            f"storage.root: {root!r} is a relative folder, and this command runs in the working directory Ray "
            f"unpacked for the job ({os.getcwd()}), which Ray deletes and renames with every code change: the "
            "cache, checkpoints and bundle would be lost. Set storage.root to s3://<bucket>/<prefix>, or to an "
            "absolute path that every Ray node mounts (with storage.shared: true)"])


class Layout:
    """The storage layout under one root: datasets/, cache/, runs/, registry/."""

    def __init__(self, root: str):
        check_root(root)
        self.root = normalize(root)

    def dataset(self, name: str) -> str:
        return join(self.root, "datasets", name)

    def cache(self, key: str = "") -> str:
        return join(self.root, "cache", key) if key else join(self.root, "cache")

    def runs(self) -> str:
        return join(self.root, "runs")

    def run(self, name: str) -> str:
        return join(self.root, "runs", name)

    def registry(self, model_name: str = "") -> str:
        return join(self.root, "registry", model_name) if model_name else join(self.root, "registry")
