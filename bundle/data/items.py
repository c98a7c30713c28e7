"""Inference items: a folder of images or a datalist as items with a unique, file-name-safe case id."""

from __future__ import annotations

import os
import re
from pathlib import Path

from bundle.data.readers import IMAGE_SUFFIXES, is_dicom_file


def _case_name(path: Path, root: Path | None) -> str:
    relative = path.relative_to(root) if root is not None else Path(path.name)
    name = str(relative)
    for suffix in (".nii.gz", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def unique_case_ids(names: list[str]) -> list[str]:
    """Make case ids unique without ever taking a name another item has (compared case-insensitively).

    A repeated id gets the first free ``_1``, ``_2``, ... suffix that is neither taken nor any
    item's own id, so ``a, a_1, a`` becomes ``a, a_1, a_2`` and no output overwrites another's.

    Args:
        names: the items' case ids, in order.

    Returns:
        the unique ids, in the same order (the first of each name keeps it).
    """
    own = {name.casefold() for name in names}
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, count = name, 0
        while candidate.casefold() in taken or (count and candidate.casefold() in own):
            count += 1
            candidate = f"{name}_{count}"
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique


def inference_items(source: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[dict]:
    """Inference items from a folder of images or a datalist JSON.

    Args:
        source: a folder (searched recursively for PNG/JPG/BMP/TIFF, DICOM, including DICOM files
            without a suffix as PACS exports name them, and NIfTI files) or a
            datalist JSON whose entries have ``image`` and optionally ``roi`` ``[x0, y0, x1, y1]``
            (original pixels) and ``case_id``.
        exclude: a folder left out of the walk (the run's output folder, when it lies inside
            ``source``, so a second run never reads its own reconstructions).

    Returns:
        items with ``image`` and ``image_path`` (the path), ``roi`` (list or None), ``site`` (or "")
        and a unique, file-name-safe ``case_id``.

    Raises:
        DatalistError: when the datalist cannot be read.
        ValueError: when the folder holds no supported image or an entry has no image path.
    """
    from bundle.data.datalist import _check_roi, read_datalist_json, resolve_path

    path = Path(source)
    items = []
    if path.is_dir():
        skip = Path(exclude).resolve() if exclude is not None else None
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and (p.name.lower().endswith(IMAGE_SUFFIXES) or (not p.suffix and is_dicom_file(p)))
            and (skip is None or not p.resolve().is_relative_to(skip))
        )
        if not files:
            raise ValueError(
                f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder; pass a folder or datalist"
            )
        items = [
            {"image": str(p), "image_path": str(p), "roi": None, "case_id": _case_name(p, path), "site": ""}
            for p in files
        ]
    else:
        datalist = read_datalist_json(path, keep_fields=("image", "roi", "case_id", "site"))
        for index, entry in enumerate(datalist["data"]):
            image = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(image, str):
                raise ValueError(f"{path}: data[{index}] has no 'image' path; every entry needs one")
            roi = entry.get("roi")
            case = entry.get("case_id") or _case_name(Path(image), None)
            resolved = str(resolve_path(image, path.parent))
            problems = _check_roi(entry, None) if roi is not None else []  # the training validator's rules
            item = {
                "image": resolved,
                "image_path": resolved,
                "roi": [float(v) for v in roi] if roi is not None and not problems else None,
                "case_id": re.sub(r"[^A-Za-z0-9._-]+", "_", str(case)),
                "site": entry.get("site", ""),
            }
            if problems:  # a bad box is this entry's error row, not the end of the run
                message, fix = problems[0]
                item["error"] = f"{path}: data[{index}] ({image}), field 'roi': {message}; fix: {fix}"
            items.append(item)
    for item, case_id in zip(items, unique_case_ids([item["case_id"] for item in items]), strict=True):
        item["case_id"] = case_id  # two entries with the same name must not overwrite each other's outputs
    return items
