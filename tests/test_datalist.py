"""Datalist validation (SPEC 1.1): every problem reported at once, with entry, file and field."""

from __future__ import annotations

import json
import shutil

import pytest
from bundle.cli import main
from bundle.data.datalist import DatalistError, load_validated_datalist
from monai.data import load_decathlon_datalist


def _write(path, datalist):
    path.write_text(json.dumps(datalist))
    return path


def test_synthetic_datalist_is_clean_and_loadable_by_monai(synthetic_dataset):
    entries = load_validated_datalist(synthetic_dataset)
    assert len(entries) == 18
    assert all(isinstance(e["site"], int) for e in entries)
    monai_entries = load_decathlon_datalist(str(synthetic_dataset), data_list_key="data")
    assert len(monai_entries) == 18 and monai_entries[0]["site"] == 0


def test_four_problems_are_reported_together(synthetic_dataset, tmp_path):
    source = json.loads(synthetic_dataset.read_text())
    good = source["data"][:4]
    for entry in good:
        shutil.copy(synthetic_dataset.parent / entry["image"], tmp_path / f"{entry['case_id']}.png")
        entry["image"] = f"{entry['case_id']}.png"
    good[0]["image"] = "missing.png"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good[1]["image"] = "broken.png"
    good[2]["roi"] = [5000.0, 10.0, 5100.0, 40.0]
    good[3]["site"] = "Hosp-1"
    path = _write(tmp_path / "datalist.json", {"sites": source["sites"], "data": good})
    with pytest.raises(DatalistError) as info:
        load_validated_datalist(path)
    problems = info.value.problems
    assert [(p.index, p.field) for p in problems] == [(0, "image"), (1, "image"), (2, "roi"), (3, "site")]
    message = str(info.value)
    assert "missing.png" in message and "file not found" in message
    assert "broken.png" in message and "unreadable" in message
    assert "lies outside the" in message and "'Hosp-1' is not an integer" in message
    assert main(["validate", str(path), "--quiet"]) == 1


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"roi": [10, 10, 5, 20]}, "roi", "empty or inverted"),
        ({"roi": [1, 2, 3]}, "roi", "not four finite numbers"),
        ({"site": 7}, "site", "not in the 'sites' map"),
        ({"site": True}, "site", "not an integer"),
        ({"pixel_spacing_mm": [0, 0.1]}, "pixel_spacing_mm", "outside"),
        ({"meta": {"nt_mm": -1}}, "meta.nt_mm", "not a thickness"),
        ({"case_id": ""}, "case_id", "missing"),
    ],
)
def test_each_field_problem_names_the_field(synthetic_dataset, tmp_path, change, field, text):
    source = json.loads(synthetic_dataset.read_text())
    entry = dict(source["data"][0])
    entry["image"] = str(synthetic_dataset.parent / entry["image"])
    entry.update(change)
    path = _write(tmp_path / "d.json", {"sites": source["sites"], "data": [entry]})
    with pytest.raises(DatalistError) as info:
        load_validated_datalist(path)
    assert info.value.problems[0].field == field and text in info.value.problems[0].message


def test_duplicate_entries_are_flagged(synthetic_dataset, tmp_path):
    source = json.loads(synthetic_dataset.read_text())
    entry = dict(source["data"][0], image=str(synthetic_dataset.parent / source["data"][0]["image"]))
    path = _write(tmp_path / "d.json", {"sites": source["sites"], "data": [entry, dict(entry)]})
    with pytest.raises(DatalistError) as info:
        load_validated_datalist(path)
    assert {p.field for p in info.value.problems} == {"image", "case_id"}


def test_a_datalist_that_is_not_json_names_line_and_column(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"data": [\n  {"image": "a.png",}\n]}')
    with pytest.raises(DatalistError, match="not valid JSON.*line 2"):
        load_validated_datalist(path)
    _write(path, [1, 2])
    with pytest.raises(DatalistError, match="'data' list"):
        load_validated_datalist(path)


def test_relative_image_paths_start_at_the_datalist_folder(synthetic_dataset):
    entries = load_validated_datalist(synthetic_dataset)
    assert entries[0]["image"].startswith(str(synthetic_dataset.parent.resolve()))
