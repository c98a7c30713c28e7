"""Files that would make a reader run a program, odd numbers and duplicated keys (issue 30, cases 1, 4, 6, 8, 9).

Only the documented formats are ever decoded: an EPS (Pillow runs Ghostscript on it) named
``scan.png`` is refused before any decoder starts. A stand-in ``gs`` on ``PATH`` records whether
anything called it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from bad_files import EPS
from bundle.data.datalist import DatalistError, read_datalist_json
from bundle.data.readers import ImageReadError, read_image
from PIL import Image


@pytest.fixture
def recording_gs(tmp_path, monkeypatch) -> Path:
    """A stand-in ``gs`` first on PATH that writes a marker file when it runs."""
    folder, marker = tmp_path / "fake_bin", tmp_path / "gs_was_called"
    folder.mkdir()
    script = folder / "gs"
    script.write_text(f"#!/bin/sh\necho called > {marker}\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return marker


def test_an_eps_named_png_is_refused_without_running_ghostscript(tmp_path, recording_gs):
    path = tmp_path / "scan.png"
    path.write_bytes(EPS)
    with pytest.raises(ImageReadError, match=r"scan.png: the content is not a PNG, JPEG, BMP or TIFF image"):
        read_image(path)
    assert not recording_gs.exists()


def test_validate_refuses_the_eps_by_name_and_checks_the_rest(tmp_path, recording_gs, capsys):
    from bundle.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "scan.png").write_bytes(EPS)
    Image.fromarray((np.arange(64 * 80).reshape(64, 80) % 256).astype(np.uint8)).save(folder / "good.png")
    datalist = tmp_path / "datalist.json"
    entries = [{"image": f"images/{n}", "roi": [10, 10, 30, 20], "site": 0} for n in ("scan.png", "good.png")]
    datalist.write_text(json.dumps({"data": entries}))
    assert main(["validate", str(datalist)]) == 1
    output = capsys.readouterr()
    problems = [line for line in (output.out + output.err).splitlines() if "not a PNG, JPEG, BMP or TIFF" in line]
    assert len(problems) == 1 and "scan.png" in problems[0]  # the good image is not among the problems
    assert not recording_gs.exists()  # the inference path is checked with the bad files (test_bad_images.py)


def _dicom(path: Path, **elements) -> Path:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = UltrasoundImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID, "US"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 16, 16, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(256, dtype=np.uint8).tobytes()
    for keyword, (vr, value) in elements.items():
        ds.add_new(keyword, vr, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    "vr, value", [("DS", "0.1"), ("LO", "abc")], ids=["PixelSpacing with one value", "PixelSpacing as text"]
)
def test_a_dicom_spacing_that_is_not_two_numbers_is_refused_with_the_field(tmp_path, vr, value):
    path = _dicom(tmp_path / "odd_spacing.dcm", PixelSpacing=(vr, value))
    with pytest.raises(ImageReadError, match=r"odd_spacing.dcm: DICOM PixelSpacing .*two numbers"):
        read_image(path)


def test_a_good_dicom_spacing_is_read(tmp_path):
    path = _dicom(tmp_path / "good.dcm", PixelSpacing=("DS", ["0.2", "0.1"]))
    assert read_image(path).pixel_spacing_mm == (0.2, 0.1)


def test_an_rgb_nifti_is_refused_with_the_fix(tmp_path):
    import nibabel

    rgb = np.zeros((8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nibabel.save(nibabel.Nifti1Image(rgb, np.eye(4)), path)
    with pytest.raises(ImageReadError, match=r"rgb.nii.gz: NIfTI voxels .*one grey channel"):
        read_image(path)


def test_a_signed_32_bit_tiff_with_negative_values_is_read_into_unit_range(tmp_path):
    path = tmp_path / "signed.tif"
    values = np.linspace(-50000, -20000, 16 * 16).reshape(16, 16).astype(np.int32)
    Image.fromarray(values, mode="I").save(path)
    array = read_image(path).array
    assert array.min() == pytest.approx(0.0) and array.max() == pytest.approx(1.0)
    assert array[0, 0] < array[-1, -1]  # order kept


@pytest.mark.parametrize("key", ["roi", "site"])
def test_a_key_given_twice_in_an_entry_is_a_datalist_problem(tmp_path, key):
    path = tmp_path / "datalist.json"
    first, second = ("[1, 2, 3, 4]", "[5, 6, 7, 8]") if key == "roi" else ("0", "1")
    path.write_text(
        '{"data": [{"image": "a.png", "roi": [1, 2, 3, 4], "site": 0},\n'
        f'          {{"image": "b.png", "{key}": {first}, "{key}": {second}, '
        + ('"site": 0}]}' if key == "roi" else '"roi": [1, 2, 3, 4]}]}')
    )
    with pytest.raises(DatalistError) as caught:
        read_datalist_json(path)
    message = str(caught.value)
    assert f"entry 1 (b.png), field '{key}': given twice" in message and "keep one value" in message


def test_a_datalist_nested_too_deep_is_a_datalist_problem(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"data": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    with pytest.raises(DatalistError, match="nested deeper than a JSON reader follows"):
        read_datalist_json(path)


def test_the_package_never_ships_half_written_exports_or_per_case_latents(tiny_trained, tmp_path):
    import shutil
    import zipfile

    from bundle.deploy.package import package_bundle

    root, _ = tiny_trained
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    np.savez(models / "train_latents.npz", case_id=np.array(["patient_0001"]), z=np.zeros((1, 128)))
    (models / ".export.abc123").mkdir()
    (models / ".export.abc123" / "encoder.ts").write_bytes(b"half written")
    (models / "tmpxyz").mkdir()
    (models / "tmpxyz" / "model.pt").write_bytes(b"half written")
    target = package_bundle(tmp_path / "dist", models)
    names = zipfile.ZipFile(target).namelist()
    assert not [n for n in names if ".export" in n or "tmpxyz" in n or "train_latents" in n]
    assert "half written" not in zipfile.ZipFile(target).read("fetal_nt_roi_cae/large_files.yml").decode()
    assert "export" not in zipfile.ZipFile(target).read("fetal_nt_roi_cae/large_files.yml").decode()
    opted = package_bundle(tmp_path / "dist_opt", models, include_per_case=True)
    assert "fetal_nt_roi_cae/models/train_latents.npz" in zipfile.ZipFile(opted).namelist()
