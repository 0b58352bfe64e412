"""Preprocessing with S3 failing inside Ray Data workers: retries, and no file skipped.

Workers of the session Ray cluster got the direct endpoint at cluster start; this test runs ``prepare`` in
a Ray task whose ``runtime_env`` carries the fault proxy's endpoint (tasks started inside inherit it).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fault_proxy import matcher

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.config.loading import validate_dict

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_flaky_s3_preprocess_in_ray_data_workers_skips_nothing(ray_cluster, flaky_s3, s3_root, small_breast):
    """``prepare`` on S3 images, run in a Ray task whose runtime_env points every Ray Data worker at
    the proxy: 10% of GETs, HEADs and PUTs fail; pyarrow's and boto3's retries absorb them, and no
    image is lost (a read error that outlived the retries would be counted as a bad file)."""
    import ray

    from medxfer.data.importers import write_many

    src = Path(small_breast).parent
    df = pd.read_csv(small_breast)
    out = storage.join(s3_root, "datasets", "breast")
    write_many([(storage.join(out, p), (src / p).read_bytes()) for p in df["path"]])
    storage.write_text(storage.join(out, "manifest.csv"), df.to_csv(index=False))
    n = {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")}
    cfg = validate_dict({"name": "flaky", "data": {"manifest": storage.join(out, "manifest.csv"), "engine": "ray"},
                         "preprocess": {"size": 28}, "storage": {"root": s3_root}})
    flaky_s3.configure(rate=0.10, faults=("500", "503", "reset"), match=matcher({"GET", "PUT", "HEAD"}))

    @ray.remote(num_cpus=0.25)
    def run_prepare(cfg_json: str) -> dict:
        from medxfer.data.cache import prepare

        return prepare(JobConfig.model_validate_json(cfg_json)).card

    card = ray.get(run_prepare.options(runtime_env={"env_vars": {"AWS_ENDPOINT_URL": flaky_s3.url}})
                   .remote(cfg.model_dump_json()), timeout=600)
    counts = dict(flaky_s3.counts)
    assert counts.get("faults", 0) >= 20, counts  # the workers really went through the proxy
    assert card["bad_files"]["count"] == 0, card["bad_files"]["files"][:5]
    assert card["input_rows"] == len(df) and {s: card["counts"][s]["total"] for s in n} == n
