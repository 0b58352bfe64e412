"""The RayJob: safe to re-apply while it runs, and its cluster goes soon after the end."""

from __future__ import annotations

import json

from k8sutil import K8S, all_objects, file_objects, key, kustomized, load_all, rayjob_specs


def test_nothing_applied_twice_suspends_a_running_job():
    """KubeRay suspends a Running RayJob (deletes its cluster) when `spec.suspend: true` arrives,
    so no manifest a user re-applies carries it; the fine-tune, which needs the source bundle,
    is applied on its own once source training has succeeded."""
    for source in (lambda: kustomized("k8s"), lambda: [o for _, o in file_objects()],
                   lambda: kustomized("k8s-overlays/raycronjob")):
        suspended = [key(o) for o in source() if o["kind"] in ("RayJob", "RayCronJob") and o["spec"].get("suspend")]
        assert not suspended, f"suspended, so re-applying them stops a running job: {suspended}"
    assert ("RayJob", "medxfer-finetune") not in {key(o) for o in kustomized("k8s")}
    (finetune,) = load_all((K8S / "finetune" / "rayjob-finetune.yaml").read_text())
    assert key(finetune) == ("RayJob", "medxfer-finetune")


def test_finished_clusters_go_within_minutes():
    for name, obj in all_objects():
        for spec in rayjob_specs(obj):
            if spec.get("shutdownAfterJobFinishes"):
                assert 0 < spec["ttlSecondsAfterFinished"] <= 600, name
                continue
            rules = spec["deletionStrategy"]["deletionRules"]
            conditions = {json.dumps(r["condition"] | {"ttlSeconds": 0}, sort_keys=True): r["condition"]["ttlSeconds"]
                          for r in rules if r["policy"] == "DeleteCluster"}
            assert len(conditions) == 3 and max(conditions.values()) <= 600, name

