"""No patient data in cards or logs: preprocessing DICOMs prints and stores no header values.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from trainutil import cluster_env

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ray
def test_preprocess_of_dicoms_prints_and_stores_no_header_values(ray_cluster, test_data, tmp_path):
    import pydicom

    planted = {"PatientName": "ZZSECRET^PATIENT", "PatientID": "PID-55501234", "PatientBirthDate": "19010203",
               "InstitutionName": "ZZ-HOSPITAL-NAME", "AccessionNumber": "ACC99887766"}
    ds = pydicom.dcmread(test_data / "images" / "dicom" / "CT_small.dcm")
    for k, v in planted.items():
        setattr(ds, k, v)
    folder = tmp_path / "dicoms"
    folder.mkdir()
    rows = []
    for i in range(12):
        d = copy.deepcopy(ds)
        arr = d.pixel_array.copy()
        arr[:8, :8] = i * 50  # images differ a little
        d.PixelData = arr.tobytes()
        d.save_as(folder / f"img{i}.dcm", enforce_file_format=True)
        rows.append({"path": f"img{i}.dcm", "label": "a" if i % 2 else "b",
                     "split": "train" if i < 8 else ("val" if i < 10 else "test")})
    broken = copy.deepcopy(ds)
    del broken.PixelData
    broken.save_as(folder / "nopixels.dcm", enforce_file_format=True)
    rows.append({"path": "nopixels.dcm", "label": "a", "split": "train"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    root = tmp_path / "store"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"data": {"manifest": str(folder / "manifest.csv"), "max_bad_fraction": 0.2,
                                            "engine": "ray"},
                                   "preprocess": {"size": 32}, "storage": {"root": str(root)}}))
    r = subprocess.run([sys.executable, "-m", "medxfer", "-v", "preprocess", "--config", str(job)],
                       capture_output=True, text=True, env=cluster_env(), cwd=tmp_path, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    assert "preprocessed 13 images" in r.stdout and "1 bad file(s) skipped" in r.stdout
    card_file = next(root.glob("cache/*/dataset.json"))
    card = json.loads(card_file.read_text())
    assert card["bad_files"]["count"] == 1 and "no pixel data" in card["bad_files"]["files"][0]["reason"]
    assert card["image_stats"]["formats"] == {"dicom": 12}
    for value in planted.values():
        for variant in {value, value.replace("^", " ")}:
            assert variant not in text, variant
            hits = [str(f) for f in root.rglob("*") if f.is_file() and variant.encode() in f.read_bytes()]
            assert not hits, (variant, hits)
