"""Reading a DICOM never follows the external references it carries: only the file given is opened."""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
from bundle.data.readers import read_image
from bundle.data.synthetic.dataset import write_synthetic_dataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while _OPENED is a list


def test_referenced_files_are_never_opened(tmp_path):
    global _OPENED
    write_synthetic_dataset(tmp_path / "data", per_site=1, sites=1, size=(64, 64), formats=("dcm",), progress=False)
    [path] = sorted((tmp_path / "data").rglob("*.dcm"))
    secret = path.parent / "ELSEWHERE" / "IMG0001"  # where the reference points
    secret.parent.mkdir()
    secret.write_bytes(b"must not be read")
    ds = pydicom.dcmread(path)
    reference = Dataset()
    reference.ReferencedFileID = ["ELSEWHERE", "IMG0001"]
    reference.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    ds.ReferencedImageSequence = Sequence([reference])
    ds.ReferencedFileID = ["ELSEWHERE", "IMG0001"]
    ds.save_as(path)

    read_image(path)  # warm: lazy imports open module files
    _OPENED = []
    try:
        image = read_image(path)
    finally:
        opened, _OPENED = _OPENED, None
    assert image.array.ndim == 2 and image.array.size > 0
    data_files = [p for p in opened if not p.endswith((".py", ".pyc", ".so")) and "site-packages" not in p]
    assert data_files and all(Path(p).resolve() == path.resolve() for p in data_files), opened
