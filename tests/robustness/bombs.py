"""Decompression bombs: small files whose headers claim huge images (issues 18 and 19.2).

Each writer streams its payload, so making a bomb never holds the image it claims in memory.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(side: int, rows: int = 1) -> Callable[[Path], None]:
    """A PNG whose IHDR claims ``side`` x ``side`` 8-bit grey; ``rows`` rows of zeros are really there."""

    def write(path: Path) -> None:
        compressor, body = zlib.compressobj(9), []
        row = bytes(side + 1)  # filter byte + pixels
        for _ in range(rows):
            body.append(compressor.compress(row))
        body.append(compressor.flush())
        header = _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", b"".join(body)) + _chunk(b"IEND", b""))

    return write


def jpeg_claiming(side: int) -> Callable[[Path], None]:
    """A small JPEG whose SOF0 marker is patched to claim ``side`` x ``side``."""

    def write(path: Path) -> None:
        buffer = io.BytesIO()
        Image.fromarray(np.full((16, 16), 90, np.uint8)).save(buffer, format="JPEG")
        data = bytearray(buffer.getvalue())
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
        path.write_bytes(bytes(data))

    return write


def tiff_claiming(side: int) -> Callable[[Path], None]:
    """A little-endian baseline TIFF whose IFD claims ``side`` x ``side`` 8-bit grey in one tiny strip."""

    def write(path: Path) -> None:
        entries = [  # tag, type (3 SHORT, 4 LONG), count, value
            (256, 4, 1, side),
            (257, 4, 1, side),
            (258, 3, 1, 8),
            (259, 3, 1, 1),
            (262, 3, 1, 1),
            (273, 4, 1, 8 + 2 + 12 * 8 + 4),
            (278, 4, 1, side),
            (279, 4, 1, 16),
        ]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
        path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + bytes(16))

    return write


def nifti_claiming(side: int) -> Callable[[Path], None]:
    """A gzipped NIfTI of ``side`` x ``side`` uint8 zeros, streamed row by row."""

    def write(path: Path) -> None:
        header = nibabel.Nifti1Header()
        header.set_data_shape((side, side))
        header.set_data_dtype(np.uint8)
        with gzip.open(path, "wb", compresslevel=9) as handle:
            handle.write(header.binaryblock + b"\0" * 4)  # 348-byte header and an empty extension flag
            row = bytes(side)
            for _ in range(side):
                handle.write(row)

    return write


def deflated_dicom(inflated_mb: int, rows: int = 64, columns: int = 64) -> Callable[[Path], None]:
    """A Deflated Explicit VR DICOM with a small image header and an element that inflates to ``inflated_mb``."""

    def write(path: Path) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        buffer = io.BytesIO()
        buffer.write(b"\0" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
        body = b"".join(
            struct.pack("<HH2sH", group, element, vr, len(value)) + value
            for group, element, vr, value in (
                (0x0028, 0x0002, b"US", struct.pack("<H", 1)),
                (0x0028, 0x0004, b"CS", b"MONOCHROME2 "),
                (0x0028, 0x0010, b"US", struct.pack("<H", rows)),
                (0x0028, 0x0011, b"US", struct.pack("<H", columns)),
                (0x0028, 0x0100, b"US", struct.pack("<H", 8)),
                (0x0028, 0x0101, b"US", struct.pack("<H", 8)),
                (0x0028, 0x0103, b"US", struct.pack("<H", 0)),
            )
        )
        size = inflated_mb << 20
        body += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, size)
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        parts = [compressor.compress(body)]
        block = bytes(1 << 20)
        for _ in range(inflated_mb):
            parts.append(compressor.compress(block))
        parts.append(compressor.flush())
        path.write_bytes(buffer.getvalue() + b"".join(parts))

    return write


#: (file name, writer, text the refusal must contain)
BOMBS = [
    ("png_40000.png", png_claiming(40000), "40000 x 40000"),
    ("png_12000.png", png_claiming(12000, rows=12000), "12000 x 12000"),
    ("jpeg_65500.jpg", jpeg_claiming(65500), "65500 x 65500"),
    ("tiff_60000.tif", tiff_claiming(60000), "60000 x 60000"),
    ("nifti_12000.nii.gz", nifti_claiming(12000), "12000 x 12000"),
    ("deflated.dcm", deflated_dicom(600), "decompression bomb"),
]


def write_bombs(folder: Path) -> Path:
    """Write every bomb into ``folder`` with a datalist that lists them (a box each); returns the datalist."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, writer, _ in BOMBS:
        writer(folder / name)
        entries.append({"image": name, "roi": [10, 10, 40, 30], "site": 0, "case_id": name.split(".")[0]})
    path = folder / "datalist.json"
    path.write_text(json.dumps({"data": entries}))
    return path
