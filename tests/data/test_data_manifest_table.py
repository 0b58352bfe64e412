"""Reading a manifest file (``medxfer.data.manifest.table``): the required columns and the likely cause."""

from __future__ import annotations

import pytest
from datautil import dataset, write_csv

from medxfer.config import DataConfig
from medxfer.data.manifest import load_manifest
from medxfer.errors import DataError


def test_missing_columns_and_wrong_delimiter(tmp_path):
    df = dataset(tmp_path)
    with pytest.raises(DataError, match="missing required column.*label.*rename column 'class' to 'label'"):
        load_manifest(write_csv(tmp_path, df.rename(columns={"label": "class"})), DataConfig())
    with pytest.raises(DataError, match="separated by semicolons"):
        load_manifest(write_csv(tmp_path, df, sep=";"), DataConfig())
