"""The shipped manifests (k8s/, k8s-overlays/) and every render: valid against the real schemas,
laid out for `kubectl apply -f k8s/`, with no secrets inline and a narrow network and RBAC.

What an API server would check is checked here offline (tests/k8sutil.py);
tests/k8s/test_k8s_server.py applies them to a real API server.
"""

from __future__ import annotations

import json
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8sutil import (
    JOBS,
    K8S,
    K8S_VERSIONS,
    OVERLAY,
    REPO,
    all_objects,
    apply_f_files,
    apply_f_objects,
    file_objects,
    find_key,
    key,
    kustomized,
    rendered_variants,
    validate_crd,
    validate_object,
)

from medxfer.k8s.names import DASHBOARD_PORT, NAMESPACE

# The labels each KubeRay v1.7.0 install puts on the operator's pod: the Helm chart
# (helm-chart/kuberay-operator/templates/deployment.yaml, values nameOverride/componentOverride)
# and the kustomize/plain manifests (ray-operator/config/manager/manager.yaml).
OPERATOR_POD_LABELS = {
    "helm": {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator",
             "app.kubernetes.io/component": "kuberay-operator"},
    "kustomize": {"app.kubernetes.io/name": "kuberay", "app.kubernetes.io/component": "kuberay-operator"},
}
SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{30,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(auth_token|password|secret_key)\s*:\s*['\"]?[A-Za-z0-9+/=_-]{16,}"),
]
SECRETISH_ENV = re.compile(r"(?i)(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL|SESSION_KEY)")


# ----------------------------------------------------------------------------- schema validation


def test_kustomize_output_validates():
    objs = kustomized()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ServiceAccount", "ServiceAccount", "Role",
                            "RoleBinding", "ConfigMap", "NetworkPolicy", "RayCluster", "RayJob", "CronJob"])
    for obj in objs + kustomized("k8s-overlays/raycronjob"):
        validate_object(obj)


def test_files_and_rendered_variants_validate():
    for name, obj in file_objects() + rendered_variants():
        try:
            validate_object(obj)
        except Exception as e:  # noqa: BLE001 - name the object in the failure
            pytest.fail(f"{name}: {e}")


def test_schema_checks_catch_mistakes():
    """The validators are not vacuous: a typo, a wrong type, a bad enum and a bad rule order all fail."""
    job = yaml.safe_load((K8S / "06-rayjob-source-train.yaml").read_text())
    typo = yaml.safe_load(yaml.safe_dump(job))
    typo["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(AssertionError, match="shutdownAfterJobFinish"):
        validate_crd(typo)
    wrong = yaml.safe_load(yaml.safe_dump(job))
    wrong["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(wrong)
    cron = yaml.safe_load((OVERLAY / "raycronjob-retrain.yaml").read_text())
    rules = cron["spec"]["jobTemplate"]["deletionStrategy"]["deletionRules"]
    rules[0]["condition"]["ttlSeconds"] = 10 ** 7  # DeleteCluster after DeleteSelf
    with pytest.raises(AssertionError, match="TTLs must grow"):
        validate_crd(cron)
    cron = yaml.safe_load((K8S / "07-cronjob-retrain.yaml").read_text())
    cron["spec"]["concurrencyPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, K8S_VERSIONS[0], strict=True)


# ----------------------------------------------------------------------------- layout (`kubectl apply -f k8s/`)


def test_apply_f_reads_ordered_manifests_and_skips_the_kustomization():
    """`kubectl apply -f k8s/` sends every .yaml in the folder, in name order, as it is."""
    files = apply_f_files()
    objs = apply_f_objects()
    assert objs and objs[0]["kind"] == "Namespace", [f.name for f in files]
    assert not [o for o in objs if o["apiVersion"].startswith("kustomize.config.k8s.io")], \
        "a kustomization among the -f files: the API server refuses kind Kustomization"
    for obj in objs[1:]:
        assert obj["metadata"]["namespace"] == NAMESPACE, key(obj)
    kinds = [o["kind"] for o in objs]
    assert kinds.index("ConfigMap") < kinds.index("RayCluster"), "the head mounts the ConfigMap"
    assert (K8S / "Kustomization").is_file() and "Kustomization" not in [f.name for f in files]


def test_apply_f_and_apply_k_give_the_same_objects():
    def canon(objs):
        return sorted(json.dumps(o, sort_keys=True) for o in objs)

    assert canon(kustomized("k8s")) == canon(apply_f_objects())


def test_overlays_live_outside_the_base():
    nested = [p for p in K8S.rglob("*") if p.name.lower() in ("kustomization", "kustomization.yaml")
              and p.parent != K8S]
    assert not nested, f"kustomize refuses an overlay inside its base: {nested}"
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert "../../k8s" in overlay["resources"]


# ----------------------------------------------------------------------------- policy


def test_no_inline_secrets():
    for name, obj in all_objects():
        for env in find_key(obj, "env"):
            for var in env:
                if SECRETISH_ENV.search(var["name"]):
                    assert "value" not in var, f"{name}: {var['name']} has an inline value"
        for env_from in find_key(obj, "envFrom"):
            for src in env_from:
                assert set(src) <= {"secretRef", "configMapRef", "prefix"}, name
    texts = [p for p in list(K8S.rglob("*")) + list(OVERLAY.rglob("*")) + list(JOBS.iterdir()) if p.is_file()]
    texts += [REPO / "Dockerfile", REPO / ".dockerignore", REPO / "constraints" / "image.txt"]
    for path in texts:
        text = path.read_text()
        for pat in SECRET_PATTERNS:
            assert not pat.search(text), f"{path}: looks like a credential ({pat.pattern})"


def test_secret_scan_is_not_vacuous():
    leaks = ["AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "key: AKIAIOSFODNN7EXAMPLE",
             "auth_token: 3f9c0a7e5b1d4c2a9e8f7a6b5c4d3e2f"]
    for leak in leaks:
        assert any(p.search(leak) for p in SECRET_PATTERNS), leak


def test_network_policy_admits_medxfer_pods_and_the_operator_of_either_install():
    (pol,) = [o for o in kustomized() if o["kind"] == "NetworkPolicy"]
    selector = pol["spec"]["podSelector"]["matchLabels"]
    (cluster,) = [o for o in kustomized() if o["kind"] == "RayCluster"]
    head_labels = dict(cluster["spec"]["headGroupSpec"]["template"]["metadata"]["labels"])
    head_labels["ray.io/is-ray-node"] = "yes"  # added by KubeRay to every Ray pod
    assert selector.items() <= head_labels.items(), "the policy must select the Ray head"
    (peers, operator) = pol["spec"]["ingress"]
    allowed = peers["from"][0]["podSelector"]["matchLabels"]
    (cron,) = [o for o in kustomized() if o["kind"] == "CronJob"]
    submitter = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert allowed.items() <= submitter.items(), "the CronJob's submitter must be admitted"
    assert operator["ports"] == [{"protocol": "TCP", "port": DASHBOARD_PORT}]
    operator_selector = operator["from"][0]["podSelector"]["matchLabels"]
    for install, pod_labels in OPERATOR_POD_LABELS.items():
        assert operator_selector.items() <= pod_labels.items(), f"the operator installed with {install} is shut out"
    assert "egress" in (K8S.parent / "docs" / "cluster.md").read_text().lower()


def test_rbac_is_namespaced_and_narrow():
    for obj in kustomized():
        assert obj.get("metadata", {}).get("namespace", NAMESPACE) == NAMESPACE or obj["kind"] == "Namespace"
        if obj["kind"] == "Role":
            for rule in obj["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"]
                assert "secrets" not in rule["resources"]
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        if obj["kind"] == "ServiceAccount":
            assert obj["automountServiceAccountToken"] is False
