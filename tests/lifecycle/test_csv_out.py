"""CSV files people open (``medxfer.lifecycle.csv_out``): no text cell runs as a spreadsheet formula, numbers stay
numbers, and a CR or LF inside a cell cannot start a row."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd

from medxfer.lifecycle.csv_out import frame_to_csv


def test_text_cells_that_start_a_formula_are_neutralised_and_numbers_stay_numbers():
    names = ["=HYPERLINK(\"http://x\",\"y\").png", "+1+1.png", "-2.png", "@SUM(A1).png", "\tt.png", "\rcr.png",
             "plain.png", "a,b\nc.png", "'quoted.png"]
    n = len(names)
    df = pd.DataFrame({"path": names, "score": np.linspace(-1.5, 1.0, n), "grade": np.arange(-4, n - 4),
                       "predicted_class": ["-1"] * (n - 1) + [None], "prob_x": [np.nan] + [0.25] * (n - 1)})
    text = frame_to_csv(df)
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == n + 1 and rows[0] == list(df.columns)  # no CR or LF started a row
    paths = [r[0] for r in rows[1:]]
    assert paths == ["'" + p for p in names[:6]] + names[6:]
    assert [r[3] for r in rows[1:]] == ["'-1"] * (n - 1) + [""]
    # Every text cell is double-quoted, numbers are not: a spreadsheet reads them as numbers.
    body = text.splitlines()[1]
    assert body.startswith('"\'=HYPERLINK(""http://x"",""y"").png",-1.5,-4,"\'-1",,') or body.startswith(
        '"\'=HYPERLINK(""http://x"",""y"").png",-1.5,-4,"\'-1",""'), body
    back = pd.read_csv(io.StringIO(text))
    np.testing.assert_allclose(back["score"], df["score"])
    assert back["grade"].tolist() == df["grade"].tolist() and back["prob_x"].isna()[0]


def test_the_experiments_table_neutralises_arm_names_and_keeps_differences_numbers():
    """Arm names may begin with '-' or '+' (their pattern allows it): the table.csv of an experiment."""
    from medxfer.experiments.label_efficiency import _csv

    text = _csv([{"arm": "-lr", "fraction": 0.1, "auroc": 0.81, "test_auroc_ci": [0.7, 0.9],
                  "paired_vs_scratch": {"ci": [-0.12, 0.2], "p_value": 0.3}}])
    header, row = list(csv.reader(io.StringIO(text)))
    assert header == ["arm", "fraction", "auroc", "test_auroc_ci_low", "test_auroc_ci_high", "diff_ci_low",
                      "diff_ci_high", "diff_p_value"]
    assert row == ["'-lr", "0.1", "0.81", "0.7", "0.9", "-0.12", "0.2", "0.3"]
    assert text.splitlines()[1] == "\"'-lr\",0.1,0.81,0.7,0.9,-0.12,0.2,0.3"
