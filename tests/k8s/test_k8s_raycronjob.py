"""KubeRay's RayCronJob: only in its overlay, never suspended, and its RayJobs delete themselves."""

from __future__ import annotations

import json

from k8sutil import check_deletion_rules, key, kustomized, of_kind, parse_cron


def test_raycronjob_ships_only_in_its_overlay_and_deletes_its_rayjobs():
    """A RayCronJob created suspended and resumed later schedules from its creation time and
    starts every missed night at once; and `ttlSecondsAfterFinished` removes only clusters."""
    assert "RayCronJob" not in [o["kind"] for o in kustomized("k8s")]
    overlay = {key(o): o for o in kustomized("k8s-overlays/raycronjob")}
    ray_cron = overlay[("RayCronJob", "medxfer-retrain")]
    assert not ray_cron["spec"].get("suspend")
    assert overlay[("CronJob", "medxfer-retrain")]["spec"]["suspend"] is True, "one scheduler at a time"
    template = ray_cron["spec"]["jobTemplate"]
    rules = template["deletionStrategy"]["deletionRules"]
    deleted_self = {json.dumps({k: v for k, v in r["condition"].items() if k != "ttlSeconds"}, sort_keys=True)
                    for r in rules if r["policy"] == "DeleteSelf"}
    assert deleted_self == {'{"jobStatus": "SUCCEEDED"}', '{"jobStatus": "FAILED"}',
                            '{"jobDeploymentStatus": "Failed"}'}
    check_deletion_rules(template)


def test_raycronjobs_parse_and_retrains_take_their_tick():
    for name, obj in of_kind("RayCronJob"):
        parse_cron(obj["spec"]["schedule"])
        if obj["metadata"]["name"].endswith("-retrain"):
            assert "--tick-from-job" in obj["spec"]["jobTemplate"]["entrypoint"], name
