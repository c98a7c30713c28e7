"""Inference items: a folder of images or a datalist as items with a unique, file-name-safe case id."""

from __future__ import annotations

import os
import re
from pathlib import Path

from bundle.data.readers import IMAGE_SUFFIXES


def _case_name(path: Path, root: Path | None) -> str:
    relative = path.relative_to(root) if root is not None else Path(path.name)
    name = str(relative)
    for suffix in (".nii.gz", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def inference_items(source: str | os.PathLike) -> list[dict]:
    """Inference items from a folder of images or a datalist JSON.

    Args:
        source: a folder (searched recursively for PNG/JPG/BMP/TIFF, DICOM and NIfTI files) or a
            datalist JSON whose entries have ``image`` and optionally ``roi`` ``[x0, y0, x1, y1]``
            (original pixels) and ``case_id``.

    Returns:
        items with ``image`` and ``image_path`` (the path), ``roi`` (list or None), ``site`` (or "")
        and a unique, file-name-safe ``case_id``.

    Raises:
        DatalistError: when the datalist cannot be read.
        ValueError: when the folder holds no supported image or an entry has no image path.
    """
    from bundle.data.datalist import read_datalist_json, resolve_path

    path = Path(source)
    items = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
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
            items.append(
                {
                    "image": resolved,
                    "image_path": resolved,
                    "roi": [float(v) for v in roi] if roi is not None else None,
                    "case_id": re.sub(r"[^A-Za-z0-9._-]+", "_", str(case)),
                    "site": entry.get("site", ""),
                }
            )
    seen: dict[str, int] = {}
    for item in items:  # two files with the same name in different entries must not overwrite each other
        count = seen.get(item["case_id"], 0)
        seen[item["case_id"]] = count + 1
        if count:
            item["case_id"] = f"{item['case_id']}_{count}"
    return items
