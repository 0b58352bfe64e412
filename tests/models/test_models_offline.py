"""ImageNet weights that cannot be downloaded are refused from the driver, before data preparation and
before Ray starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_offline_imagenet_init_is_refused_before_ray_starts(tmp_path):
    """model.init: imagenet with an empty torch cache and no network: exit 2 with the fix, from the driver,
    before data preparation and before Ray starts (not three failed worker groups later)."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "ft", "data": {"manifest": str(tmp_path / "manifest.csv")},
                                   "model": {"backbone": "resnet18", "init": "imagenet"},
                                   "storage": {"root": str(tmp_path / "store")}}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.lower().endswith("_proxy")}
    env.update(TORCH_HOME=str(tmp_path / "torch"), https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    code = ("import sys, ray; from medxfer.cli import main; rc = main(sys.argv[1:]); "
            "print('ray initialized:', ray.is_initialized()); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "finetune", "--config", str(job)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "ImageNet weights of resnet18" in p.stderr and str(tmp_path / "torch") in p.stderr
    assert "model.init: scratch" in p.stderr and "Traceback" not in p.stderr
    assert "ray initialized: False" in p.stdout
    assert not (tmp_path / "store").exists()  # no run folder, no cache
