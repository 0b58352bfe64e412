"""Pod templates: non-root and hardened, and no Kubernetes API token where drivers run."""

from __future__ import annotations

from k8sutil import API_TOKEN_PATH, AUTOSCALER_ACCOUNT, all_objects, kustomized, pod_specs, ray_cluster_specs


def test_pods_are_non_root_and_hardened():
    for name, obj in all_objects():
        for pod in pod_specs(obj):
            sc = pod.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, name
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            assert "hostNetwork" not in pod and "hostPID" not in pod, name
            tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
            for c in pod["containers"]:
                csc = c.get("securityContext", {})
                assert csc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}"
                assert csc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}"
                assert not csc.get("privileged"), f"{name}/{c['name']}"
                if csc.get("readOnlyRootFilesystem"):  # then Ray and Python need a writable /tmp
                    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                    assert mounts.get("/tmp") in tmp_volumes, f"{name}/{c['name']}: read-only root without /tmp"
        for spec in ray_cluster_specs(obj):
            if spec.get("enableInTreeAutoscaling"):
                assert spec["autoscalerOptions"]["securityContext"]["allowPrivilegeEscalation"] is False


def test_only_the_autoscaler_container_gets_an_api_token():
    """No pod mounts a token; the long-running head has its own account (KubeRay binds the
    autoscaler's Role to it) and a projected token mounted in the autoscaler container only,
    not in the Ray container, where every submitted driver runs."""
    accounts = {o["metadata"]["name"]: o for o in kustomized("k8s") if o["kind"] == "ServiceAccount"}
    autoscaling = 0
    for name, obj in all_objects():
        clusters = ray_cluster_specs(obj)
        autoscaling_heads = [id(s["headGroupSpec"]["template"]["spec"]) for s in clusters
                             if s.get("enableInTreeAutoscaling")]
        for pod in pod_specs(obj):
            assert pod["automountServiceAccountToken"] is False, name
            assert pod["serviceAccountName"] in accounts, name
            if pod["serviceAccountName"] == AUTOSCALER_ACCOUNT:
                assert id(pod) in autoscaling_heads, f"{name}: only the autoscaling head uses its account"
            for c in pod["containers"]:
                assert not [m for m in c.get("volumeMounts", []) if m["mountPath"].startswith(API_TOKEN_PATH)], \
                    f"{name}/{c['name']}: an API token in a Ray container"
        for spec in clusters:
            if not spec.get("enableInTreeAutoscaling"):
                continue
            autoscaling += 1
            head = spec["headGroupSpec"]["template"]["spec"]
            assert head["serviceAccountName"] == AUTOSCALER_ACCOUNT, name
            (token_mount,) = [m for m in spec["autoscalerOptions"]["volumeMounts"]
                              if m["mountPath"] == API_TOKEN_PATH]
            (volume,) = [v for v in head["volumes"] if v["name"] == token_mount["name"]]
            assert any("serviceAccountToken" in s for s in volume["projected"]["sources"]), name
    assert autoscaling
    assert accounts[AUTOSCALER_ACCOUNT]["automountServiceAccountToken"] is False
