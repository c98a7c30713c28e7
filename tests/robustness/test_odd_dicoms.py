"""Odd DICOMs are named with the fix and never stop the check of the rest (issue 19.6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from bundle.cli import main
from bundle.data.items import inference_items
from bundle.data.readers import ImageReadError, read_image
from pydicom.data import get_testdata_file

PALETTE = get_testdata_file("examples_palette.dcm", download=False)


def _palette_without_lut(path: Path) -> Path:
    ds = pydicom.dcmread(PALETTE)
    for keyword in ("Red", "Green", "Blue"):
        for suffix in ("PaletteColorLookupTableDescriptor", "PaletteColorLookupTableData"):
            if keyword + suffix in ds:
                delattr(ds, keyword + suffix)
    ds.save_as(path)
    return path


def _frames_not_a_number(path: Path) -> Path:
    ds = pydicom.dcmread(PALETTE)
    ds.NumberOfFrames = 12
    ds.save_as(path)
    data = bytearray(path.read_bytes())  # pydicom will not write "ab" into an IS element: patch the bytes
    tag = data.index(b"\x28\x00\x08\x00")
    value = data.index(b"12", tag)
    data[value : value + 2] = b"ab"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (_palette_without_lut, "PALETTE COLOR DICOM without its lookup table"),
        (_frames_not_a_number, "NumberOfFrames 'ab' is not a whole number"),
    ],
    ids=["palette without lookup table", "NumberOfFrames 'ab'"],
)
def test_each_odd_dicom_is_refused_with_the_fix(tmp_path, make, expected):
    path = make(tmp_path / "odd.dcm")
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_validate_names_both_and_goes_on_to_check_the_rest(tmp_path, capsys):
    good = shutil.copy(PALETTE, tmp_path / "good.dcm")
    entries = [
        {"image": Path(p).name, "roi": [10, 10, 40, 30], "site": 0, "case_id": Path(p).stem}
        for p in (_palette_without_lut(tmp_path / "nolut.dcm"), _frames_not_a_number(tmp_path / "frames.dcm"), good)
    ]
    (tmp_path / "datalist.json").write_text(json.dumps({"data": entries}))
    assert main(["validate", str(tmp_path / "datalist.json"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "nolut.dcm" in err and "frames.dcm" in err and "good.dcm" not in err
    assert "2 problem(s)" in err


def test_a_dicom_without_a_suffix_is_found_by_its_content(tmp_path):
    shutil.copy(PALETTE, tmp_path / "IM0001")  # as PACS exports name them
    (tmp_path / "notes").write_text("not an image")
    items = inference_items(tmp_path)
    assert [Path(item["image"]).name for item in items] == ["IM0001"]
    assert read_image(tmp_path / "IM0001").array.ndim == 2
