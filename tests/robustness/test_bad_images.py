"""Bad image files: each is read correctly or refused with one clear error naming the file.

The same files then go through the inference workflow as one folder: the run finishes, every file
gets a row (``ok`` or ``error`` with the file named), and nothing is left half-written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image

from bundle.readers import ImageReadError, read_image

ROOT = Path(__file__).resolve().parents[2]


def _png(array: np.ndarray, mode: str | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        Image.fromarray(array, mode=mode).save(path)

    return write


def _truncated(kind: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        buffer = io.BytesIO()
        Image.fromarray(np.full((64, 64), 90, np.uint8)).save(buffer, format=kind)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    return write


def _palette(path: Path) -> None:
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint8)).convert("P").save(path)


def _nifti(array: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), path)

    return write


def _dicom_without_pixels(path: Path) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID, "US"
    ds.save_as(path, enforce_file_format=True)


GREY = (np.add.outer(np.arange(96), np.arange(128)) % 256).astype(np.uint8)
NON_UTF8 = os.fsdecode(b"caf\xe9_scan.png")  # a Latin-1 file name, not valid UTF-8

# (file name, writer, "ok" or the text the error must contain)
CASES = [
    ("truncated.png", _truncated("PNG"), "not a readable image"),
    ("truncated.jpg", _truncated("JPEG"), "not a readable image"),
    ("zero_bytes.png", lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    ("text_named.png", lambda p: p.write_text("this is not an image"), "not a readable image"),
    ("grey16.png", _png(GREY.astype(np.uint16) * 257), "ok"),
    ("rgba.png", _png(np.dstack([GREY] * 3 + [np.full_like(GREY, 200)])), "ok"),
    ("palette.png", _palette, "ok"),
    ("constant.png", _png(np.full((80, 100), 128, np.uint8)), "ok"),
    ("smaller_than_canvas.png", _png(GREY[:9, :12]), "ok"),
    ("ten_times_canvas.png", _png(np.tile(GREY, (7, 5))[:640, :640]), "ok"),
    (NON_UTF8, _png(GREY), "ok"),
    ("nan.nii.gz", _nifti(np.where(np.eye(32) > 0, np.nan, 0.5).astype(np.float32)), "NaN or infinite"),
    ("three_dims.nii.gz", _nifti(np.zeros((16, 16, 4), np.float32)), "is not 2-D"),
    ("no_pixels.dcm", _dicom_without_pixels, "no pixel data"),
]


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_images")
    for name, write, _ in CASES:
        write(folder / name)
    return folder


@pytest.mark.parametrize(
    "name, expected", [(c[0], c[2]) for c in CASES], ids=[c[0].encode(errors="replace").decode() for c in CASES]
)
def test_each_file_is_read_or_refused_clearly(bad_folder, name, expected):
    path = bad_folder / name
    if expected == "ok":
        image = read_image(path).array
        assert image.ndim == 2 and np.isfinite(image).all() and 0.0 <= image.min() <= image.max() <= 1.0
    else:
        with pytest.raises(ImageReadError) as caught:
            read_image(path)
        message = str(caught.value)
        assert str(path) in message and expected in message


def test_inference_over_the_bad_folder_reports_each_file_and_finishes(tiny_trained, bad_folder, tmp_path):
    from conftest import TINY_ARCH

    root, _ = tiny_trained
    out = tmp_path / "out"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(ROOT / "configs" / "inference.json")]
    command += ["--dataset_dir", str(bad_folder), "--output_dir", str(out), "--models_dir", str(root / "models")]
    for key, value in TINY_ARCH.items():
        command += [f"--{key}", json.dumps(value)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8", errors="surrogateescape")))
    assert len(rows) == len(CASES)
    by_file = {Path(row["image"]).name: row for row in rows}
    for name, _, expected in CASES:
        row = by_file[name]
        if expected == "ok":
            assert row["status"] == "ok", (name, row.get("error"))
            assert Path(row["reconstruction"]).exists() and np.load(row["latent"]).shape == (128,)
        else:
            assert row["status"] == "error" and expected in row["error"], (name, row["error"])
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers
