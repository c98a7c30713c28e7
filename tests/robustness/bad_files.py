"""Bad image files shared by the robustness tests: (file name, writer, "ok" or the expected error text)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import nibabel
import numpy as np
import pydicom
from PIL import Image


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


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
GREY = (np.add.outer(np.arange(96), np.arange(128)) % 256).astype(np.uint8)
NON_UTF8 = os.fsdecode(b"caf\xe9_scan.png")  # a Latin-1 file name, not valid UTF-8

#: (file name, writer, "ok" or the text the error must contain)
CASES = [
    ("truncated.png", _truncated("PNG"), "not a readable image"),
    ("truncated.jpg", _truncated("JPEG"), "not a readable image"),
    ("zero_bytes.png", lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    ("text_named.png", lambda p: p.write_text("this is not an image"), "not a PNG, JPEG, BMP or TIFF"),
    ("eps_named.png", lambda p: p.write_bytes(EPS), "not a PNG, JPEG, BMP or TIFF"),  # Pillow would run Ghostscript
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


def write_cases(folder: Path) -> Path:
    """Write every file of :data:`CASES` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, write, _ in CASES:
        write(folder / name)
    return folder
