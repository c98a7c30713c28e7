"""Converter for the public Shenzhen first-trimester dataset ("Dataset for Fetus Framework") (SPEC 1.2).

The annotations are one sheet, ``ObjectDetection.xlsx`` (or a CSV with the same columns), with one
row per structure: ``fname, structure, h_min, w_min, h_max, w_max`` where ``h`` is the row and
``w`` the column. Images sit in folders with ``Standard`` / ``Non-standard`` subfolders, and the
same file name can recur in several folders. The converter writes a datalist (SPEC 1.1):

- ``roi`` is the ``structure == "NT"`` box as ``[w_min, h_min, w_max, h_max]`` (max taken as exclusive);
- ``site`` is 1 for images under a folder whose name contains "external", 0 otherwise;
- ``meta.standard_plane`` comes from the ``Standard`` / ``Non-standard`` folder;
- every other structure box goes to ``meta.structures``.

A file name that matches several images is resolved when all of them have identical bytes (one
image copied into several folders); otherwise it is ambiguous and, by default, skipped and listed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bundle.utils.atomic import atomic_write_json

REQUIRED_COLUMNS = ("fname", "structure", "h_min", "w_min", "h_max", "w_max")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".dcm")
SITES = {"0": "Shenzhen-internal", "1": "Shenzhen-external"}


class ConversionError(ValueError):
    """The annotation sheet or image tree cannot be converted; the message says why and how to fix it."""


@dataclass
class ConversionReport:
    """What the converter did, for the summary it prints.

    Args:
        entries: datalist entries written.
        missing_images: sheet file names with no image under the root.
        ambiguous: file names matching several different images (skipped).
        without_nt: annotated images with no NT box (skipped).
        bad_rows: sheet rows that could not be parsed, with the reason.
    """

    entries: list[dict] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    without_nt: list[str] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable summary."""
        lines = [f"{len(self.entries)} entries written"]
        for label, items in (
            ("sheet names with no image", self.missing_images),
            ("ambiguous names skipped", list(self.ambiguous)),
            ("images without an NT box", self.without_nt),
            ("unparseable rows", self.bad_rows),
        ):
            if items:
                shown = ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
                lines.append(f"{len(items)} {label}: {shown}")
        return "\n".join(lines)


def find_annotation_sheet(root: Path) -> Path:
    """Find ``ObjectDetection.xlsx`` or ``ObjectDetection.csv`` under ``root``.

    Raises:
        ConversionError: when neither exists.
    """
    for pattern in ("ObjectDetection.xlsx", "ObjectDetection.csv", "*.xlsx", "*.csv"):
        found = sorted(root.rglob(pattern))
        if found:
            return found[0]
    raise ConversionError(f"{root}: no ObjectDetection.xlsx or .csv found; pass the sheet with --annotations")


def read_annotation_rows(sheet: Path) -> list[dict[str, str]]:
    """Read the sheet's rows as dicts with lower-case column names.

    Args:
        sheet: ``.xlsx`` (needs the ``xlsx`` extra, openpyxl) or ``.csv``.

    Returns:
        rows as string dicts.

    Raises:
        ConversionError: for missing columns or a missing openpyxl.
    """
    if sheet.suffix.lower() == ".xlsx":
        try:
            import openpyxl
        except ImportError:
            raise ConversionError(
                f"{sheet}: reading .xlsx needs openpyxl; install the extra (pip install '.[xlsx]') "
                "or save the sheet as CSV"
            ) from None
        workbook = openpyxl.load_workbook(sheet, read_only=True, data_only=True)
        values = list(workbook.worksheets[0].iter_rows(values_only=True))
        workbook.close()
        if not values:
            raise ConversionError(f"{sheet}: the sheet is empty")
        header = [str(v).strip().lower() if v is not None else "" for v in values[0]]
        rows = [
            {h: "" if v is None else str(v).strip() for h, v in zip(header, row, strict=False)} for row in values[1:]
        ]
    else:
        with open(sheet, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ConversionError(f"{sheet}: missing column(s) {missing}; the sheet needs {list(REQUIRED_COLUMNS)}")
    return rows


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _standard_flag(parts: tuple[str, ...]) -> bool | None:
    """True under a ``Standard`` folder, False under ``Non-standard``, None when neither."""
    for part in reversed(parts):
        key = re.sub(r"[^a-z]", "", part.lower())
        if key == "standard":
            return True
        if key in ("nonstandard", "notstandard"):
            return False
    return None


def convert_shenzhen(
    root: str | os.PathLike,
    output: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    ambiguous: str = "skip",
) -> ConversionReport:
    """Convert the Shenzhen dataset tree into a datalist.

    Args:
        root: dataset folder holding the image folders (and the sheet, unless ``annotations``).
        output: datalist JSON to write; image paths are written relative to its folder.
        annotations: the sheet (.xlsx or .csv); searched under ``root`` when None.
        ambiguous: ``skip`` (default) or ``error`` for a name matching several different images.

    Returns:
        the conversion report (entries and everything skipped).

    Raises:
        ConversionError: for an unreadable sheet, no usable entries, or ambiguity with ``error``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConversionError(f"{root}: not a folder; pass the dataset's top folder")
    sheet = Path(annotations) if annotations else find_annotation_sheet(root)
    rows = read_annotation_rows(sheet)
    report = ConversionReport()

    boxes: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for number, row in enumerate(rows, start=2):
        name = row["fname"]
        if not name:
            continue
        try:
            h0, w0, h1, w1 = (float(row[c]) for c in ("h_min", "w_min", "h_max", "w_max"))
        except ValueError:
            report.bad_rows.append(f"row {number} ({name})")
            continue
        structure = row["structure"].strip()
        boxes[name].setdefault(structure, [w0, h0, w1, h1])

    by_name: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            by_name[path.name].append(path)

    out_dir = Path(output).resolve().parent
    for name in sorted(boxes):
        candidates = by_name.get(Path(name).name, [])
        if "/" in name or "\\" in name:
            suffix = name.replace("\\", "/")
            candidates = [p for p in candidates if p.as_posix().endswith(suffix)]
        if not candidates:
            report.missing_images.append(name)
            continue
        if len(candidates) > 1 and len({_digest(p) for p in candidates}) > 1:
            report.ambiguous[name] = [str(p.relative_to(root)) for p in candidates]
            continue
        structures = boxes[name]
        nt = next((box for key, box in structures.items() if key.upper() == "NT"), None)
        if nt is None:
            report.without_nt.append(name)
            continue
        path = candidates[0]
        relative = path.relative_to(root)
        case_id = "__".join(relative.with_suffix("").parts)
        case_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", case_id)
        site = 1 if any("external" in part.lower() for part in relative.parts[:-1]) else 0
        report.entries.append(
            {
                "image": os.path.relpath(path.resolve(), out_dir),
                "roi": nt,
                "site": site,
                "case_id": case_id,
                "pixel_spacing_mm": None,
                "meta": {
                    "standard_plane": _standard_flag(relative.parts[:-1]),
                    "source_folder": str(relative.parent.as_posix()),
                    "fname": name,
                    "structures": dict(structures),
                },
            }
        )
    if report.ambiguous and ambiguous == "error":
        listing = "; ".join(f"{k}: {v}" for k, v in list(report.ambiguous.items())[:5])
        raise ConversionError(
            f"{sheet}: {len(report.ambiguous)} file name(s) match several different images ({listing})"
        )
    if not report.entries:
        raise ConversionError(f"{sheet}: no image with an NT box was found under {root}\n{report.summary()}")
    datalist = {
        "name": "shenzhen_first_trimester",
        "description": f"Converted from {sheet.name}; boxes are [x0, y0, x1, y1] = [w_min, h_min, w_max, h_max].",
        "sites": SITES,
        "data": report.entries,
    }
    atomic_write_json(output, datalist)
    return report
