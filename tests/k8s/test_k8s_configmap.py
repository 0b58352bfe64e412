"""The `medxfer-jobs` ConfigMap: every job config in jobs/, verbatim and valid."""

from __future__ import annotations

from k8sutil import JOBS, K8S, kustomized, load_all

from medxfer.cli import main
from medxfer.config.loading import read_yaml_text, validate_dict
from medxfer.k8s.names import CONFIGMAP


def test_configmap_holds_every_job_config_verbatim():
    (cm,) = load_all((K8S / "04-configmap-jobs.yaml").read_text())
    assert cm["metadata"]["name"] == CONFIGMAP
    assert cm["data"] == {p.name: p.read_text() for p in sorted(JOBS.glob("*.yaml"))}


def test_configmap_render_refuses_an_invalid_job_config(tmp_path, capsys):
    (tmp_path / "ok.yaml").write_text((JOBS / "finetune.yaml").read_text())
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: zero\n")
    assert main(["k8s", "render", "--config", str(tmp_path), "--kind", "configmap"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["k8s", "render", "--config", str(tmp_path / "none"), "--kind", "configmap"]) == 2


def test_every_job_config_validates_and_is_in_the_configmap():
    files = sorted(p.name for p in JOBS.glob("*.yaml"))
    assert {"source-train.yaml", "finetune.yaml", "evaluate.yaml", "retrain.yaml", "predict.yaml"} <= set(files)
    for name in files:
        text = (JOBS / name).read_text()
        validate_dict(read_yaml_text(text, name), name)
        assert "s3://medxfer-data" in text, f"{name}: examples point at the documented bucket"
    (cm,) = [o for o in kustomized() if o["kind"] == "ConfigMap"]
    assert cm["metadata"]["name"] == CONFIGMAP
    assert sorted(cm["data"]) == files
    assert cm["data"]["finetune.yaml"] == (JOBS / "finetune.yaml").read_text()
