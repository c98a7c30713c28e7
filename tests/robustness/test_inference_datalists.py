"""Inference datalists go through the training validator's box rules: each bad box is its entry's error row.

Before, ``roi`` values such as ``"abc"``, ``5``, ``[1, 2, 3]``, NaN, Infinity, a nested list or ``true``
crashed the whole run naming no entry, and an inverted or outside box was reported ``ok`` (issue 19.3).
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

from conftest import inference_command

ROOT = Path(__file__).resolve().parents[2]

BAD_BOXES = {  # as written in the JSON file -> text of the error
    '"abc"': "is not four finite numbers",
    "5": "is not four finite numbers",
    "[1, 2, 3]": "is not four finite numbers",
    "[NaN, 2, 30, 20]": "is not four finite numbers",
    "[1, 2, Infinity, 20]": "is not four finite numbers",
    "[[1, 2], [30, 20]]": "is not four finite numbers",
    "true": "is not four finite numbers",
    "[30, 20, 10, 5]": "is empty or inverted",
    "[10, 10, 5000, 20]": "lies outside the",
}


def test_every_bad_box_is_an_error_row_naming_its_entry(tiny_trained, tmp_path):
    root, _ = tiny_trained
    image = sorted((root / "data/images/site0").glob("*.png"))[0]
    rows = [f'{{"image": "{image}", "case_id": "bad{i}", "roi": {box}}}' for i, box in enumerate(BAD_BOXES)]
    rows.append(f'{{"image": "{image}", "case_id": "good", "roi": [10, 10, 30, 20]}}')
    datalist = tmp_path / "list.json"
    datalist.write_text('{"data": [' + ", ".join(rows) + "]}")  # NaN / Infinity as a hand-edited file has them
    out = tmp_path / "out"
    result = subprocess.run(
        inference_command(root / "models", datalist, out), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    by_case = {r["case_id"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert by_case["good"]["status"] == "ok"
    for i, expected in enumerate(BAD_BOXES.values()):
        row = by_case[f"bad{i}"]
        assert row["status"] == "error" and expected in row["error"] and "'roi'" in row["error"], row
        assert row["roi_edge_mae"] in ("", None), row  # no metric of a box that is not one
    assert "data[0]" in by_case["bad0"]["error"] and str(datalist) in by_case["bad0"]["error"]
