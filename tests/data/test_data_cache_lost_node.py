"""Preprocessing with the Ray engine on two nodes, one of which dies mid-way (its raylet SIGKILLed, as
an OOM kill or a lost VM would): the cache is complete, and the command says so in one line of its own
instead of Ray's dump of the dead raylet's log.

Real parts: phantom PNGs written here, two logical Ray nodes of ``ray.cluster_utils.Cluster`` in this
process (fixture ``two_nodes``), medxfer's own Ray Data pipeline and a folder every node sees.
"""

from __future__ import annotations

import logging

import pytest
from trainutil import in_background, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_node_lost_during_preprocess_costs_retries_not_images_and_one_line(two_nodes, tmp_path, caplog, capsys):
    from medxfer import storage
    from medxfer.config.loading import validate_dict
    from medxfer.data.cache import prepare
    from medxfer.data.phantom import write_pngs

    cluster, (_, second) = two_nodes
    manifest = write_pngs(str(tmp_path / "phantoms"), 1200, size=384)
    root = tmp_path / "root"
    cfg = validate_dict({"name": "lost-node-pre", "data": {"manifest": manifest, "engine": "ray"},
                         "preprocess": {"size": 224, "channels": 1, "clahe": True},
                         "storage": {"root": str(root), "shared": True}})  # one host: every node sees the folder

    def shards() -> list:
        return sorted(root.glob("cache/*/shards-*/*/*.parquet"))

    with caplog.at_level(logging.INFO, logger="medxfer"):
        th, box = in_background(lambda: prepare(cfg))
        wait_for(lambda: shards() or "err" in box or "out" in box, 300, "the first shard")
        done_before = len(shards())
        cluster.remove_node(second, allow_graceful=False)  # SIGKILL: the raylet and its workers die at once
        th.join(600)
        assert not th.is_alive() and "err" not in box, box.get("err")
        said = wait_for(lambda: next((r.getMessage() for r in caplog.records if "died" in r.getMessage()), None),
                        60, "the line naming the dead node")
    p = box["out"]
    assert done_before < len(shards()), "preprocessing finished before the node died; the test proved nothing"
    assert p.card["total"] == 1200 and p.card["bad_files"]["count"] == 0, p.card["bad_files"]
    assert sum(p.card["counts"][s]["total"] for s in ("train", "val", "test")) == 1200
    assert said.startswith("Ray node ") and "died: Ray runs the work that was placed there again" in said, said
    assert sum("died" in r.getMessage() for r in caplog.records) == 1
    out = capsys.readouterr()
    assert "[state-dump]" not in out.out + out.err and "marked dead" not in out.out + out.err, out.out[-2000:]
    assert storage.exists(storage.join(p.uri, "dataset.json"))
