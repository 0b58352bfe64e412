"""Shared helpers for medxfer benchmarks: the machine description and result recording.

Every benchmark prints one JSON object and stores it under ``benchmarks/results/`` with the
machine it ran on, so a number in benchmarks/README.md (written by summarize.py) can always be
traced to where it came from.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def test_data_dir() -> Path:
    return Path(os.environ.get("MEDXFER_TEST_DATA", REPO.parent / "shared" / "data")).resolve()


def own_ray_env(folder: Path, env: dict | None = None) -> dict:
    """``env`` (default: this process's) for a command that must start a Ray of its own: no RAY_ADDRESS,
    and Ray's temp folder under ``folder``. Without it, ``ray.init()`` joins whatever cluster someone
    started on this host with ``ray start`` (it reads /tmp/ray/ray_current_cluster), and timings and
    memory would be that cluster's. ``folder`` should have a short path: Ray's sockets live below it."""
    env = dict(os.environ if env is None else env)
    env.pop("RAY_ADDRESS", None)
    env["RAY_TMPDIR"] = str(folder)
    return env


def finished(result: dict) -> dict:
    """A training run's result, once it ran all its epochs (or stopped early on validation).

    A run stopped by a signal still writes a bundle (its best epoch so far), so a benchmark that
    went on would measure a half-trained model under a full run's name. It stops instead; the same
    command resumes the run from its checkpoint.
    """
    if result.get("status") not in ("complete", "early_stopped"):
        raise SystemExit(f"{result.get('name')}: {result.get('status')} after epoch {result.get('epoch')}/"
                         f"{result.get('epochs_total')}; nothing after it was measured. Run the benchmark again "
                         f"to resume it.")
    return result


def machine() -> dict:
    """CPU count, CPU model, GPU (if any) and the versions that matter for the numbers."""
    info: dict = {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for mod in ("torch", "torchvision", "ray", "cv2", "numpy", "pyarrow"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        info["gpu"] = None
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


WORK = "<work>"  # how a results file writes the benchmark's --work folder


def relative_paths(obj, work: Path | None = None):
    """The result with every absolute local path made relative: to the benchmark's ``--work``
    folder (written ``<work>/...``) when under it, else to the repository. A results file
    describes the run, not the folders of the machine it ran on (a work folder outside the
    checkout would otherwise read ``../<someone's folder>/...``)."""
    if isinstance(obj, dict):
        return {k: relative_paths(v, work) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [relative_paths(v, work) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj and " " not in obj:
        if work is not None and Path(obj).resolve().is_relative_to(work.resolve()):
            return f"{WORK}/{Path(obj).resolve().relative_to(work.resolve()).as_posix()}"
        return os.path.relpath(obj, REPO)
    return obj


def record(name: str, result: dict, work: Path | None = None) -> Path:
    """Print the result and store it as benchmarks/results/<name>.json (latest run wins). Paths
    under ``work`` (the benchmark's --work folder) are written ``<work>/...``."""
    payload = relative_paths({
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **result,
        **({"paths": f"{WORK}/... is the run's --work folder"} if work is not None else {}),
    }, work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return out
