"""Storage every node sees: local folders refused on a Ray cluster of several nodes (unless declared
shared), relative roots refused inside a Ray job's temporary working directory.

The cluster is real: two Ray nodes on this host (``tests/raynodes.py``), which medxfer's commands
join through ``RAY_ADDRESS`` as they would join a cluster of machines.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from evalutil import breast_job, tiny_bundle
from raynodes import env_without_ray, ray_nodes

from medxfer import storage
from medxfer.config.loading import dump_yaml
from medxfer.errors import ConfigError
from medxfer.storage.layout import check_root

MEDXFER = str(Path(sys.executable).parent / "medxfer")


def test_a_relative_root_is_refused_only_inside_a_ray_job_folder(tmp_path, monkeypatch):
    job_dir = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    for relative in ("./medxfer-runs", "medxfer-runs", "file://runs"):
        with pytest.raises(ConfigError, match=r"storage\.root: .* relative folder.*s3://") as e:
            storage.Layout(relative)
        assert str(job_dir) in str(e.value)
    for fine in (str(tmp_path / "store"), "s3://bucket/prefix", f"file://{tmp_path}/store"):
        check_root(fine)
    monkeypatch.chdir(tmp_path)  # an ordinary folder: a relative root is the user's choice
    assert storage.Layout("./medxfer-runs").root == str(tmp_path / "medxfer-runs")


def _small_breast(test_data, folder: Path, rows: int) -> str:
    """The first ``rows`` BreastMNIST images of each split's share, as PNGs + manifest.csv in ``folder``."""
    import pandas as pd
    from evalutil import breast_manifest

    full = Path(breast_manifest(test_data, folder.parent / "full"))
    df = pd.read_csv(full).groupby("split", group_keys=False).head(rows // 3)
    for rel in df["path"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes((full.parent / rel).read_bytes())
    df.to_csv(folder / "manifest.csv", index=False)
    return str(folder / "manifest.csv")


def _run(args: list[str], address: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MEDXFER, *args], env={**env_without_ray(), "RAY_ADDRESS": address}, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.ray
def test_local_storage_on_two_nodes_is_refused_unless_shared_and_s3_works(s3_root, test_data, tmp_path):
    """On two nodes: a local root or local images are refused before any work, naming S3 and
    storage.shared; declared shared (true on one host), the same job runs; and with the data and the
    root in S3 (the local S3-compatible server), Ray Data tasks on both nodes build the cache."""
    local = tmp_path / "store"
    manifest = _small_breast(test_data, local / "datasets" / "breast", rows=120)
    job = tmp_path / "job.yaml"
    job.write_text(dump_yaml(breast_job(str(local), manifest, data={"engine": "ray"})))
    with ray_nodes(2, cpus=2) as address:
        for command in (["preprocess"], ["finetune"]):
            p = _run([*command, "--config", str(job)], address, tmp_path)
            assert p.returncode == 2, p.stdout + p.stderr
            assert "a local folder, and the Ray cluster has 2 nodes" in p.stderr, p.stderr
            assert "s3://" in p.stderr and "storage.shared: true" in p.stderr and "Traceback" not in p.stderr
            assert not (local / "cache").exists() and not (local / "runs").exists(), "refused before any work"

        # predict: Ray tasks on any node would read the local images and bundle; in this process they are local.
        bundle = tiny_bundle(str(tmp_path / "bundle"), classes=("malignant", "normal_or_benign"), size=28)
        images = str(local / "datasets" / "breast" / "images")
        ray_predict = _run(["predict", "--bundle", str(tmp_path / "bundle"), "--input", images, "--output",
                            str(tmp_path / "p-ray"), "--engine", "ray"], address, tmp_path)
        assert ray_predict.returncode == 2 and "--storage-shared" in ray_predict.stderr, ray_predict.stderr
        here = _run(["predict", "--bundle", str(tmp_path / "bundle"), "--input", images, "--output",
                     str(tmp_path / "p-local"), "--engine", "local"], address, tmp_path)
        assert here.returncode == 0 and bundle.id and "predicted 120 of 120" in here.stdout, here.stderr

        # Without RAY_ADDRESS a command starts a Ray of its own, although this cluster announced itself on
        # the host (Ray's address file, which a bare ray.init() joins, num_cpus then refused).
        own = subprocess.run([sys.executable, "-c", "import ray; from medxfer.runtime import init_ray; "
                              "init_ray(num_cpus=1); print(len(ray.nodes()), ray.cluster_resources()['CPU'])"],
                             env=env_without_ray(), capture_output=True, text=True, timeout=300)
        assert own.returncode == 0 and own.stdout.split() == ["1", "1.0"], own.stdout + own.stderr

        shared = _run(["preprocess", "--config", str(job), "--set", "storage.shared=true"], address, tmp_path)
        assert shared.returncode == 0, shared.stdout + shared.stderr
        assert len(list((local / "cache").glob("*/dataset.json"))) == 1

        remote = storage.join(s3_root, "datasets", "breast")
        storage.copy_tree(str(local / "datasets" / "breast"), remote)
        p = _run(["preprocess", "--config", str(job), "--set", f"storage.root={s3_root}",
                  "--set", f"data.manifest={storage.join(remote, 'manifest.csv')}"], address, tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        (key,) = storage.list_dir(storage.join(s3_root, "cache"))
        card = storage.read_json(storage.join(s3_root, "cache", key, "dataset.json"))
        assert card["total"] == 120 and card["engine"] == "ray", card
