"""``evaluate --compare``: two bundles on the same BreastMNIST images (S3 on moto), the paired-bootstrap
difference of their AUROC, and the ``evaluate`` command line around it."""

from __future__ import annotations

import pytest
from evalutil import breast_job, breast_manifest, file_hashes, tiny_bundle

from medxfer import storage
from medxfer.cli import main
from medxfer.errors import ConfigError
from medxfer.evaluate import compare_bundles


def test_compare_and_evaluate_cli(s3_root, test_data, tmp_path, capsys):
    # Bundles and a manifest with MedMNIST's class indices, as before named classes: they keep working.
    manifest = breast_manifest(test_data, tmp_path / "breast", label_names="index")
    cfg = breast_job(s3_root, manifest, data={"positive_class": "0"})
    named = str(tmp_path / "named" / "bundle")
    tiny_bundle(named, classes=("0", "1"), size=28, seed=1, positive_class="0")
    untrained = str(tmp_path / "untrained" / "bundle")
    tiny_bundle(untrained, classes=("0", "1"), size=28, seed=3)
    with pytest.raises(ConfigError, match="different positive classes"):  # '0' (named) vs '1' (default)
        compare_bundles(named, untrained, cfg, "test", out=str(tmp_path / "cmp"))
    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"positive_class": "0"})})
    r = compare_bundles(named, untrained, cfg, "test", out=str(tmp_path / "cmp"))
    d = r["difference"]
    assert r["n_common"] == 156 and r["metric"] == d["metric"] == "auroc"
    assert d["difference"] == pytest.approx(r["a"]["metrics"]["auroc"]["value"] - r["b"]["metrics"]["auroc"]["value"])
    assert d["ci"][0] <= d["difference"] <= d["ci"][1] and d["method"] == "BCa" and d["n_boot"] == 300
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "BCa paired bootstrap of 300 resamples, seed 0" in md and (tmp_path / "cmp" / "roc_compare.png").exists()
    # The CLI with a manifest as --data; the spec comes from the bundle, so the cache is a hit.
    before = file_hashes(untrained)
    capsys.readouterr()
    rc = main(["evaluate", "--bundle", untrained, "--data", manifest, "--set", f"storage.root={s3_root}",
               "--set", "evaluate.bootstrap=100"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "auroc" in out
    # The untrained card names no positive class: the output says it is the default and how to name it.
    assert "positive class: 1 (the default: the last class; name it with data.positive_class" in out
    assert f"--report {storage.join(str(tmp_path / 'untrained' / 'report'), 'report.json')}" in out
    assert (tmp_path / "untrained" / "report" / "report.md").exists()
    rc = main(["evaluate", "--bundle", untrained, "--data", manifest, "--set", f"storage.root={s3_root}",
               "--set", "evaluate.positive_class='0'", "--set", "evaluate.bootstrap=100"])
    assert rc == 0 and "positive class: 0 (named for this evaluation (evaluate.positive_class))" in (
        capsys.readouterr().out)
    assert file_hashes(untrained) == before
    # A rule that cannot be parsed is refused with the config, before any data work.
    rc = main(["evaluate", "--bundle", untrained, "--data", manifest, "--set", "evaluate.operating_point=top10"])
    assert rc == 2 and "evaluate.operating_point: expected 'youden'" in capsys.readouterr().err
