"""Batch prediction on a real local Ray cluster over real full-size X-rays and DICOMs."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from evalutil import file_hashes, report_for, tiny_bundle

from medxfer import storage
from medxfer.cli import main
from medxfer.errors import DataError, MedxferError
from medxfer.lifecycle.predict import list_inputs, predict, predictions_table


@pytest.fixture(scope="module")
def bundle_and_report(tmp_path_factory):
    """A tiny real bundle and an evaluation report of it whose operating point is 0.5 for 'abnormal'."""
    base = tmp_path_factory.mktemp("pb")
    uri = str(base / "bundle")
    card = tiny_bundle(uri, classes=("normal", "abnormal"), size=32)
    rep = base / "report.json"
    rep.write_text(json.dumps(report_for(card, 0.5, "abnormal")))
    return uri, str(rep)


@pytest.fixture(scope="module")
def bundle(bundle_and_report):
    return bundle_and_report[0]


def test_predict_folder_every_file_gets_a_row(ray_cluster, bundle_and_report, test_data, s3_root):
    bundle, report = bundle_and_report
    folder = test_data / "images"
    inputs, skipped = list_inputs(str(folder))
    assert any(p.endswith(".dcm") for p in inputs) and any(p.endswith(".jpg") for p in inputs)
    assert any("Apache-2.0" in p for p in skipped)  # a licence text, not an image
    out_uri = f"{s3_root}/predictions"
    s = predict(bundle, str(folder), out_uri, batch_size=8, report=report, engine="ray")
    assert s["engine"] == "ray"
    df = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{out_uri}/predictions.parquet")))
    csv = pd.read_csv(io.BytesIO(storage.read_bytes(f"{out_uri}/predictions.csv")), keep_default_na=False)
    assert len(df) == len(inputs) == len(csv) == s["n_inputs"]
    assert sorted(df["path"]) == sorted(inputs)
    bad = df[df["error"] != ""]
    good = df[df["error"] == ""]
    # The extension-less licence file in images/dicom is not an image: reported, not dropped.
    assert any(p.endswith("LICENSE-pydicom-MIT") for p in bad["path"])
    assert all(len(e) > 5 for e in bad["error"])
    assert bad["predicted_class"].isna().all() and bad["prob_abnormal"].isna().all()
    # Every X-ray (PNG, JPEG, both DICOM photometric variants) is predicted.
    for name in ("nih_00000001_000_cardiomegaly.png", "cxr_rgb_2373x2373.jpg", "siim_monochrome1.dcm",
                 "siim_monochrome2.dcm", "CT_small.dcm"):
        assert any(p.endswith(name) for p in good["path"]), name
    probs = good[["prob_normal", "prob_abnormal"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(good["predicted_class"]) <= {"normal", "abnormal"}
    want = np.where(good["prob_abnormal"] >= 0.5, "abnormal", "not abnormal")
    assert list(good["decision"]) == list(want)
    # The output names the operating point that decided: this report's.
    assert set(df["threshold_source"]) == {f"report {report}"} and s["decision"]["source"] == f"report {report}"
    assert s["decision"]["threshold"] == 0.5 and s["decision"]["positive_class"] == "abnormal"
    assert s["n_errors"] == len(bad) and set(s["errors"]) == set(bad["path"])
    assert len(csv[csv["error"] != ""]) == len(bad)


def test_predict_manifest_missing_file_and_fail_on_bad(ray_cluster, bundle, test_data, tmp_path):
    cxr = test_data / "images" / "cxr"
    man = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(cxr / "tbx11k_tb_tb0005.png"), "missing.png",
                           str(cxr / "siim_monochrome2.dcm")]}).to_csv(man, index=False)
    s = predict(bundle, str(man), str(tmp_path / "out"), batch_size=4)  # no operating point named
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    # Scores only: no decision, and the summary says why and how to get one.
    assert df["decision"].isna().all() and df["threshold"].isna().all() and df["threshold_source"].isna().all()
    assert s["decision"]["source"] is None and "--report or --registry-version" in s["decision"]["note"]
    assert df["score"].notna().sum() == 2 and set(df["positive_class"]) == {"abnormal"}
    assert list(df["path"]) == [str(cxr / "tbx11k_tb_tb0005.png"), str(tmp_path / "missing.png"),
                                str(cxr / "siim_monochrome2.dcm")]
    assert list(df["error"] == "") == [True, False, True]
    assert "not found" in df["error"][1]
    assert s["n_predicted"] == 2
    with pytest.raises(Exception) as ei:
        predict(bundle, str(man), str(tmp_path / "out2"), fail_on_bad=True)
    assert "missing.png" in str(ei.value) and "fail-on-bad" in str(ei.value)
    assert not (tmp_path / "out2" / "predictions.parquet").exists()


def test_a_fifo_named_in_a_manifest_is_one_error_row_not_a_batch_that_never_ends(bundle, test_data, tmp_path):
    """A FIFO waits for a writer when opened; a worklist naming one (a pipe left by an export tool)
    still gives every good file its prediction and the FIFO one error row naming its kind."""
    import os
    import threading

    cxr = test_data / "images" / "cxr"
    os.mkfifo(tmp_path / "pipe.png")
    man = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(cxr / "tbx11k_tb_tb0005.png"), "pipe.png"]}).to_csv(man, index=False)
    box: dict = {}
    th = threading.Thread(target=lambda: box.update(s=predict(bundle, str(man), str(tmp_path / "out"), engine="local")),
                          daemon=True)
    th.start()
    th.join(120)
    if th.is_alive():
        with open(tmp_path / "pipe.png", "wb"):  # a writer lets the stuck reader go
            pass
        pytest.fail("predict waited on the FIFO")
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert list(df["error"] == "") == [True, False] and box["s"]["n_predicted"] == 1
    assert "not a regular file (a FIFO)" in df["error"][1], df["error"][1]


def test_predict_on_a_cluster_whose_cpus_are_held_says_why_and_goes_on_when_freed(ray_cluster, bundle, test_data,
                                                                                     tmp_path, caplog):
    """Another job holding every CPU of the cluster (an actor here) left ``predict --engine ray`` waiting
    without a word. Within its watchdog time the command names the cluster's CPUs, the free ones and
    what a task needs; once the CPUs are freed it finishes with every row."""
    import logging

    import ray
    from trainutil import in_background, wait_for

    cxr = test_data / "images" / "cxr"
    man = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(cxr / "tbx11k_tb_tb0005.png"), str(cxr / "siim_monochrome2.dcm")]}).to_csv(man,
                                                                                                       index=False)
    free = wait_for(lambda: (c := ray.available_resources().get("CPU", 0)) == int(c) and c, 60,
                    "the session's CPUs to be free")  # a whole number: Ray asks that of more than one CPU
    hog = ray.remote(num_cpus=free)(type("OtherJob", (), {"ping": lambda self: 1})).remote()
    ray.get(hog.ping.remote())
    try:
        with caplog.at_level(logging.INFO, logger="medxfer"):
            th, box = in_background(lambda: predict(bundle, str(man), str(tmp_path / "out"), engine="ray",
                                                    watchdog_s=2))
            said = wait_for(lambda: next((r.getMessage() for r in caplog.records if "nothing finished" in
                                          r.getMessage()), None) or ("err" in box and "failed"), 60, "the watchdog")
            assert "err" not in box and "out" not in box, box
    finally:
        ray.kill(hog)
    th.join(180)
    assert not th.is_alive() and "err" not in box, box.get("err")
    assert said.startswith("predict: nothing finished for ") and "(0 of 2 images done)" in said, said
    assert f"the cluster has {ray.cluster_resources()['CPU']:g} CPU" in said and ", 0 free" in said, said
    assert "other work holds the CPUs" in said, said
    assert box["out"]["n_predicted"] == 2


def test_predictions_table_ordinal_and_multilabel():
    rows = pd.DataFrame({"index": [0, 1], "path": ["a", "b"],
                         "scores": [np.array([2.6]), np.array([np.nan])], "error": ["", "bad file"]})
    out = predictions_table(rows, "ordinal", ["0", "1", "2", "3"])
    assert out["predicted_class"][0] == "3" and out["predicted_class"].isna()[1]
    assert out["grade"][0] == pytest.approx(2.6)
    rows["scores"] = [np.array([0.7, 0.2, 0.9]), np.array([np.nan] * 3)]
    out = predictions_table(rows, "multilabel", ["a", "b", "c"])
    assert out["predicted_class"][0] == "a|c" and out["predicted_class"].isna()[1]
    assert list(out["error"]) == ["", "bad file"]


def test_predict_refuses_bad_input(tmp_path, bundle):
    with pytest.raises(MedxferError, match="no files found"):
        predict(bundle, str(tmp_path / "nothing"), str(tmp_path / "o"))


def test_predict_inputs_are_checked_like_training_manifests(tmp_path):
    """'..' escapes and symlinks leading out of a manifest's folder are refused, as in training; a
    folder's links to files outside it are skipped and reported, not predicted."""
    import cv2

    from medxfer.errors import DataError

    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    outside = tmp_path / "outside.png"
    outside.write_bytes(png)
    folder = tmp_path / "worklist"
    folder.mkdir()
    (folder / "a.png").write_bytes(png)
    (folder / "link.png").symlink_to(outside)
    pd.DataFrame({"path": ["a.png", "../outside.png"]}).to_csv(folder / "dotdot.csv", index=False)
    with pytest.raises(DataError, match=r"dotdot.csv: relative path\(s\) leave the manifest's folder via '\.\.'"):
        list_inputs(str(folder / "dotdot.csv"))
    pd.DataFrame({"path": ["a.png", "link.png"]}).to_csv(folder / "links.csv", index=False)
    with pytest.raises(DataError, match=r"links.csv: path\(s\) at line\(s\) 3 are symlinks leading outside"):
        list_inputs(str(folder / "links.csv"))
    pd.DataFrame({"path": ["a.png", str(outside)]}).to_csv(folder / "ok.csv", index=False)
    assert list_inputs(str(folder / "ok.csv")) == ([str(folder / "a.png"), str(outside)], [])  # absolute: as given
    (folder / "ok.csv").unlink()
    for f in ("dotdot.csv", "links.csv"):
        (folder / f).unlink()
    images, skipped = list_inputs(str(folder))
    assert images == [str(folder / "a.png")] and skipped == [str(folder / "link.png")]


def test_decode_errors_in_predictions_carry_no_header_values(test_data, tmp_path):
    """A malformed DICOM attribute holding a patient identifier: the prediction row names the file
    and the kind of problem, never the value (no Ray: the decode stage is a plain function)."""
    from hostile import PLANTED, malformed_dicoms

    from medxfer.config import PreprocessConfig
    from medxfer.lifecycle.predict import decode_batch

    paths = []
    for name, data in malformed_dicoms(test_data).items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    spec = PreprocessConfig(size=16, channels=1).model_dump(mode="json")
    out = decode_batch({"index": np.arange(len(paths)), "path": np.asarray(paths, dtype=object)}, spec,
                       max_pixels=10**9, fail_on_bad=False)
    errors = dict(zip([p.rsplit("/", 1)[1] for p in paths], out["error"], strict=True))
    assert errors["frames.dcm"] == "DICOM NumberOfFrames is not a whole number"
    assert errors["slope.dcm"].startswith("could not apply the DICOM file's value and display transforms")
    assert errors["window.dcm"] == ""  # an unreadable window falls back to the full range
    assert not any(PLANTED in e or "55501234" in e or "DOE" in e for e in out["error"])


def test_predict_with_a_registry_version_uses_its_operating_point(ray_cluster, bundle_and_report, test_data,
                                                                  tmp_path, capsys):
    """The registry version's bundle and operating point decide, the output says so, and neither the
    bundle nor its registry copy changes by a byte."""
    bundle, report = bundle_and_report
    root = str(tmp_path / "store")
    before = file_hashes(bundle)
    assert main(["registry", "promote", "chest", "--bundle", bundle, "--report", report, "--root", root]) == 0
    registered = file_hashes(storage.join(root, "registry", "chest", "versions", "v0001", "bundle"))
    cxr = test_data / "images" / "cxr"
    out = tmp_path / "pred"
    capsys.readouterr()
    assert main(["predict", "--registry-version", "chest:champion", "--root", root, "--input", str(cxr),
                 "--output", str(out)]) == 0
    line = capsys.readouterr().out
    assert "from registry chest v0001" in line and "P(abnormal) >= 0.5000" in line
    df = pd.read_parquet(out / "predictions.parquet")
    assert set(df["threshold_source"]) == {"registry chest v0001"} and df["decision"].notna().any()
    assert json.loads((out / "summary.json").read_text())["decision"]["source"] == "registry chest v0001"
    assert file_hashes(bundle) == before
    assert file_hashes(storage.join(root, "registry", "chest", "versions", "v0001", "bundle")) == registered


def test_predict_refuses_an_operating_point_of_another_model(bundle_and_report, tmp_path):
    bundle, report = bundle_and_report
    other = tiny_bundle(str(tmp_path / "other"), classes=("normal", "abnormal"), size=32, seed=5)
    rep = tmp_path / "other-report.json"
    rep.write_text(json.dumps(report_for(other, 0.2, "abnormal")))
    with pytest.raises(DataError, match="not an evaluation of"):
        predict(bundle, str(tmp_path), str(tmp_path / "o"), report=str(rep))
    with pytest.raises(DataError, match="not both"):
        predict(bundle, str(tmp_path), str(tmp_path / "o"), report=report, registry_version="m:v0001")
    assert not (tmp_path / "o").exists()


@pytest.mark.s3
def test_inputs_on_s3_and_local_are_read_by_the_one_reader_and_a_missing_one_gets_its_row(test_data, s3_root,
                                                                                        tmp_path):
    """The decode stage reads a batch with ``storage.read_many`` (the cache's reader): S3 and local
    files in one batch, a missing object named in its own row (no Ray: the stage is a plain function)."""
    from medxfer.config import PreprocessConfig
    from medxfer.data.preprocess import preprocess_bytes
    from medxfer.lifecycle.predict import decode_batch

    cxr = test_data / "images" / "cxr"
    on_s3 = storage.join(s3_root, "worklist", "a.png")
    storage.write_bytes(on_s3, (cxr / "tbx11k_tb_tb0005.png").read_bytes())
    storage.write_bytes(storage.join(s3_root, "worklist", "b.dcm"), (cxr / "siim_monochrome2.dcm").read_bytes())
    images, skipped = list_inputs(storage.join(s3_root, "worklist"))
    assert images == [on_s3, storage.join(s3_root, "worklist", "b.dcm")] and skipped == []
    paths = [*images, storage.join(s3_root, "worklist", "gone.png"), str(cxr / "nih_00000001_000_cardiomegaly.png")]
    spec = PreprocessConfig(size=16, channels=1)
    out = decode_batch({"index": np.arange(4), "path": np.asarray(paths, dtype=object)},
                       spec.model_dump(mode="json"), max_pixels=10**9, fail_on_bad=False)
    assert list(out["error"][[0, 1, 3]]) == ["", "", ""]
    assert out["error"][2] == f"{paths[2]}: not found"
    assert np.array_equal(out["image"][0], preprocess_bytes(storage.read_bytes(on_s3), spec, on_s3))
    assert not out["image"][2].any()


def test_every_file_name_is_data_and_predictions_csv_is_safe_to_open(ray_cluster, tmp_path, capsys):
    """A folder holding a name that is not UTF-8, names with a CR or formula characters, and a file that
    does not decode; a model whose classes start formulas ('-1', '@sum'). Every file gets its row and
    nothing crashes. The Parquet keeps each value as it is (the undecodable name as its file:// URI, which
    reads the file back); the CSV neutralises text cells (OWASP: a leading quote, every text cell quoted,
    so the CR cannot start a row) and keeps scores as numbers."""
    import csv
    import os

    import cv2

    bundle = str(tmp_path / "bundle")
    card = tiny_bundle(bundle, classes=("-1", "@sum"), size=32)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(report_for(card, 0.0, "@sum")))  # threshold 0: every image is '@sum'
    png = cv2.imencode(".png", np.full((40, 40), 120, np.uint8))[1].tobytes()
    folder = tmp_path / "in"
    folder.mkdir()
    names = {b"\xff-scan.png": png, b"=HYPERLINK(1).png": png, b"-1.png": png, b"\rcr.png": png, b"ok.png": png,
             b"broken.png": b"not a png", b"\x1b[2Jwiped.png": b"not a png either"}
    for name, data in names.items():
        with open(os.fsencode(str(folder)) + b"/" + name, "wb") as f:
            f.write(data)
    out = tmp_path / "out"
    assert main(["predict", "--bundle", bundle, "--report", str(report), "--input", str(folder),
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "predicted 5 of 7 images" in printed and "broken.png" in printed
    assert "\x1b" not in printed and "\\x1b[2Jwiped.png" in printed  # a name is shown, never obeyed
    df = pd.read_parquet(out / "predictions.parquet")
    undecodable = "file://" + str(folder) + "/%FF-scan.png"
    assert set(df["path"]) == {undecodable, *(str(folder / n.decode()) for n in names if n != b"\xff-scan.png")}
    assert storage.read_bytes(undecodable) == png
    ok = df[df["error"] == ""]
    assert len(ok) == 5 and set(ok["decision"]) == {"@sum"} and set(ok["predicted_class"]) <= {"-1", "@sum"}
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == list(df["path"])  # the CR inside a name started no row
    good = [r for r in rows if r["error"] == ""]
    assert {r["decision"] for r in good} == {"'@sum"} and {r["positive_class"] for r in rows} == {"'@sum"}
    assert {r["predicted_class"] for r in good} <= {"'-1", "'@sum"}
    assert all(0 <= float(r["prob__sum"]) <= 1 for r in good)
    # Text cells quoted, numbers not: a spreadsheet reads the scores as numbers.
    raw = (out / "predictions.csv").read_bytes().decode("utf-8")  # as written: no newline translation
    assert raw.startswith('"path","predicted_class","prob_-1","prob__sum","positive_class","score"')
    assert f'"{str(folder)}/\rcr.png"' in raw and ',"\'@sum",0.' in raw
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_inputs"] == 7 and sorted(summary["errors"]) == [str(folder / n) for n in
                                                                       ("\x1b[2Jwiped.png", "broken.png")]


@pytest.mark.ray
def test_the_in_process_and_ray_engines_write_the_same_rows(ray_cluster, bundle_and_report, test_data, tmp_path):
    """Real X-rays and DICOMs (PNG, JPEG, JPEG 2000, palette, multi-frame), a file no decoder reads and one
    whose compressed frame lies about its size: the same rows, the same errors and the same scores (to
    float tolerance: torch's thread count differs between the engines) from either engine."""
    import shutil

    import hostile

    bundle, report = bundle_and_report
    folder = tmp_path / "worklist"
    shutil.copytree(test_data / "images", folder)
    (folder / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (folder / "lying.dcm").write_bytes(hostile.jpeg_frame_dicom((20000, 20000)))
    out = {}
    for engine in ("local", "ray"):
        s = predict(bundle, str(folder), str(tmp_path / engine), batch_size=8, report=report, engine=engine)
        assert s["engine"] == engine
        out[engine] = pd.read_parquet(tmp_path / engine / "predictions.parquet")
    local, ray_rows = out["local"], out["ray"]
    assert list(local["path"]) == list(ray_rows["path"]) and list(local["error"]) == list(ray_rows["error"])
    bad = local[local["error"] != ""]
    assert {p.rsplit("/", 1)[1] for p in bad["path"]} >= {"junk.png", "lying.dcm"}
    assert len(local) - len(bad) >= 15
    for col in ("prob_normal", "prob_abnormal", "score"):
        np.testing.assert_allclose(local[col].to_numpy(), ray_rows[col].to_numpy(), atol=1e-5, equal_nan=True)
    assert list(local["decision"].fillna("")) == list(ray_rows["decision"].fillna(""))
    assert list(local["predicted_class"].fillna("")) == list(ray_rows["predicted_class"].fillna(""))
