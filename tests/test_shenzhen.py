"""Shenzhen dataset converter on a small fake tree written by the test itself."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from bundle.cli import main
from bundle.data.datalist import load_validated_datalist
from bundle.data.shenzhen import ConversionError, convert_shenzhen
from PIL import Image

COLUMNS = ["fname", "structure", "h_min", "w_min", "h_max", "w_max"]


def _image(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((60, 80), value, np.uint8)).save(path)


@pytest.fixture
def fake_tree(tmp_path):
    root = tmp_path / "Dataset for Fetus Framework"
    _image(root / "Set1-Training&Validation Sets CNN" / "Standard" / "1.png", 10)
    _image(root / "Set1-Training&Validation Sets CNN" / "Non-standard" / "2.png", 20)
    _image(root / "External Test Set" / "Standard" / "3.png", 30)
    # The same name in two folders with identical bytes (a copy) ...
    _image(root / "Set1-Training&Validation Sets CNN" / "Standard" / "4.png", 40)
    _image(root / "Set2-Testing" / "Standard" / "4.png", 40)
    # ... and with different bytes (ambiguous).
    _image(root / "Set1-Training&Validation Sets CNN" / "Standard" / "5.png", 50)
    _image(root / "External Test Set" / "Non-standard" / "5.png", 55)
    rows = [
        ["1.png", "NT", 30, 20, 40, 50],
        ["1.png", "nasal bone", 10, 5, 15, 20],
        ["2.png", "NT", 31, 21, 41, 51],
        ["3.png", "NT", 32, 22, 42, 52],
        ["3.png", "thalami", 5, 5, 20, 30],
        ["4.png", "NT", 33, 23, 43, 53],
        ["5.png", "NT", 34, 24, 44, 54],
        ["6.png", "NT", 1, 1, 2, 2],  # no such image
        ["7.png", "palate", 1, 1, 2, 2],  # no NT box and no image
    ]
    return root, rows


def _write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def test_csv_sheet_converts_to_a_valid_datalist(fake_tree, tmp_path):
    root, rows = fake_tree
    _write_csv(root / "ObjectDetection.csv", rows)
    output = tmp_path / "out" / "datalist.json"
    report = convert_shenzhen(root, output)
    entries = {e["meta"]["fname"]: e for e in json.loads(output.read_text())["data"]}
    assert set(entries) == {"1.png", "2.png", "3.png", "4.png"}
    assert entries["1.png"]["roi"] == [20.0, 30.0, 50.0, 40.0]  # [w_min, h_min, w_max, h_max]
    assert entries["1.png"]["meta"]["structures"]["nasal bone"] == [5.0, 10.0, 20.0, 15.0]
    assert entries["1.png"]["site"] == 0 and entries["3.png"]["site"] == 1
    assert entries["1.png"]["meta"]["standard_plane"] is True and entries["2.png"]["meta"]["standard_plane"] is False
    assert list(report.ambiguous) == ["5.png"] and report.missing_images == ["6.png", "7.png"]
    assert len({e["case_id"] for e in entries.values()}) == 4
    assert len(load_validated_datalist(output)) == 4


def test_xlsx_sheet_gives_the_same_datalist(fake_tree, tmp_path):
    import openpyxl  # the `xlsx` extra, also installed with `test`

    root, rows = fake_tree
    _write_csv(tmp_path / "sheet.csv", rows)
    convert_shenzhen(root, tmp_path / "from_csv.json", annotations=tmp_path / "sheet.csv")
    workbook = openpyxl.Workbook()
    workbook.active.append(COLUMNS)
    for row in rows:
        workbook.active.append(row)
    workbook.save(root / "ObjectDetection.xlsx")
    convert_shenzhen(root, tmp_path / "from_xlsx.json")
    assert (
        json.loads((tmp_path / "from_csv.json").read_text())["data"]
        == json.loads((tmp_path / "from_xlsx.json").read_text())["data"]
    )


def test_ambiguous_names_can_be_an_error(fake_tree, tmp_path):
    root, rows = fake_tree
    _write_csv(root / "ObjectDetection.csv", rows)
    with pytest.raises(ConversionError, match="5.png"):
        convert_shenzhen(root, tmp_path / "d.json", ambiguous="error")


def test_missing_columns_are_named(fake_tree, tmp_path):
    root, _ = fake_tree
    (root / "ObjectDetection.csv").write_text("fname,structure,top,left\n1.png,NT,1,2\n")
    with pytest.raises(ConversionError, match=r"missing column\(s\) \['h_min'"):
        convert_shenzhen(root, tmp_path / "d.json")


def test_cli_converts_and_reports(fake_tree, tmp_path, capsys):
    root, rows = fake_tree
    _write_csv(root / "ObjectDetection.csv", rows)
    assert main(["convert-shenzhen", str(root), "--output", str(tmp_path / "d.json")]) == 0
    assert "4 entries written" in capsys.readouterr().out
