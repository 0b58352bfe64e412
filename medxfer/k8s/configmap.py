"""The ``medxfer-jobs`` ConfigMap: the job configs every pod reads, from a folder of them."""

from __future__ import annotations

from pathlib import Path

from medxfer.errors import ConfigError
from medxfer.k8s.names import CONFIGMAP, meta


def configmap(jobs_dir: str) -> dict:
    """The ``medxfer-jobs`` ConfigMap: every ``*.yaml`` in ``jobs_dir``, each one validated first.

    Committed rendered (``k8s/04-configmap-jobs.yaml``) so ``kubectl apply -f k8s/`` creates
    it; a Ray head whose config volume names a missing ConfigMap never starts.
    """
    from medxfer.config.loading import load_config

    files = sorted(Path(jobs_dir).glob("*.yaml"))
    if not files:
        raise ConfigError([f"--config {jobs_dir}: no *.yaml job configs in this folder"])
    for f in files:
        load_config(str(f))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(CONFIGMAP, "job-configs"),
        "data": {f.name: f.read_text() for f in files},
    }
