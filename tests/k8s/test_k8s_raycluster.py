"""Ray clusters (the RayCluster and each RayJob's own): token auth, nothing exposed, the head
runs no tasks, and images that carry the cluster's Ray version."""

from __future__ import annotations

from k8sutil import all_objects, find_key, ray_cluster_specs, rayjob_specs

from medxfer.k8s.names import RAY_VERSION, TOKEN_SECRET


def test_ray_clusters_use_token_auth_and_stay_internal():
    for name, obj in all_objects():
        assert obj["kind"] != "Secret", f"{name}: secrets are created out of band, not shipped"
        assert obj["kind"] not in ("Ingress", "ClusterRole", "ClusterRoleBinding"), name
        if obj["kind"] == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", name
        for spec in ray_cluster_specs(obj):
            assert spec["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}, name
            head = spec["headGroupSpec"]
            assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress"), name
            assert head["rayStartParams"]["num-cpus"] == "0", f"{name}: the head must not run tasks"
        for spec in rayjob_specs(obj):
            assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1, name


def test_images_are_pinned_and_match_ray_version():
    for name, obj in all_objects():
        for image in find_key(obj, "image"):
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"{name}: {image} has no tag"
            assert not image.endswith(":latest"), f"{name}: {image}"
        for spec in ray_cluster_specs(obj):
            assert spec["rayVersion"] == RAY_VERSION, name
            for image in find_key(spec, "image"):
                assert f"ray{spec['rayVersion']}" in image, f"{name}: {image} does not carry rayVersion"
