"""Shared fixtures: the real data folder, a real S3 protocol server, a real local Ray cluster.

Nothing here is a mock. The S3 server is moto's threaded server on 127.0.0.1 speaking the
real protocol to boto3 and pyarrow; Ray is a real local cluster. Both start once per test
session and are stopped at the end.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import pytest
from fault_proxy import flaky_s3  # noqa: F401 - a fixture, used by name

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The shared real-data folder (MEDXFER_TEST_DATA, default ../shared/data)."""
    root = Path(os.environ.get("MEDXFER_TEST_DATA", REPO.parent / "shared" / "data")).resolve()
    if not (root / "medmnist").is_dir():
        msg = f"real test data not found at {root}; set MEDXFER_TEST_DATA"
        if os.environ.get("MEDXFER_REQUIRE_TEST_DATA") or os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def s3_server():
    """moto's threaded S3 server on loopback; sets AWS_* so boto3, pyarrow and Ray workers use it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (
        "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"
    )}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_root(s3_server) -> str:
    """A fresh bucket on the S3 test server, as an s3:// storage root."""
    from medxfer import storage

    bucket = f"medxfer-test-{uuid.uuid4().hex[:12]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A real local Ray cluster for the whole session (started after the S3 server so
    workers inherit its endpoint). 4 logical CPUs on a 2-core machine: Ray Train workers
    take fractions, and Ray Data keeps room to run."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if ray.is_initialized():
        ray.shutdown()
    from medxfer.runtime import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_breast(test_data, tmp_path_factory) -> str:
    """A seeded, stratified slice of BreastMNIST (real images; 160 train / 48 val / 24 test) as PNG files."""
    import pandas as pd

    from medxfer.data.importers import import_medmnist

    folder = tmp_path_factory.mktemp("breast")
    import_medmnist(test_data / "medmnist" / "breastmnist.npz", str(folder), "breastmnist")
    df = pd.read_csv(folder / "manifest.csv")
    parts = []
    for split, n in (("train", 160), ("val", 48), ("test", 24)):
        sub = df[df["split"] == split]
        for label in sorted(sub["label"].unique()):
            g = sub[sub["label"] == label]
            parts.append(g.sample(max(2, round(len(g) * n / len(sub))), random_state=0))
    pd.concat(parts).to_csv(folder / "small.csv", index=False)
    return str(folder / "small.csv")


@pytest.fixture
def two_nodes(s3_server, monkeypatch):
    """A head without CPUs (the command, its control actor and Ray Train's controller) and two nodes of 2 CPUs,
    in this process; the session's single-node Ray, when it runs, is stopped first and started again after."""
    import ray
    from ray.cluster_utils import Cluster

    from medxfer.runtime import init_ray

    had_session = ray.is_initialized()
    if had_session:
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    init_ray()
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        monkeypatch.delenv("RAY_ADDRESS")
        if had_session:
            init_ray(num_cpus=4)
