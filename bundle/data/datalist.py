"""The datalist (SPEC 1.1): loading, path resolution and validation.

One validator serves every workflow: ``python -m bundle validate``, training, evaluation and
inference all call :func:`load_validated_datalist`, which reports every problem at once (entry
index, file, field, fix) and refuses to start on a broken datalist.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

from bundle.data.readers import ImageReadError, read_image
from tqdm import tqdm

SPACING_RANGE_MM = (0.005, 5.0)


@dataclass(frozen=True)
class Problem:
    """One problem found in a datalist.

    Args:
        index: entry index in ``data`` (None for a top-level problem).
        image: the entry's image path as written in the datalist.
        field: the offending field.
        message: what is wrong.
        fix: how to fix it.
    """

    index: int | None
    image: str | None
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = "datalist" if self.index is None else f"entry {self.index}"
        if self.image:
            where += f" ({self.image})"
        return f"{where}, field '{self.field}': {self.message}; fix: {self.fix}"


class DatalistError(ValueError):
    """A datalist with problems; ``problems`` lists all of them, the message shows them all."""

    def __init__(self, path: str | os.PathLike, problems: list[Problem]) -> None:
        super().__init__(path, problems)  # every argument, so the error pickles and copies
        self.path = str(path)
        self.problems = problems

    def __str__(self) -> str:
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"{self.path}: {len(self.problems)} problem(s) in the datalist:\n{lines}"


def read_datalist_json(path: str | os.PathLike, keep_fields: Sequence[str] | None = None) -> dict:
    """Read a datalist file and check its top-level shape.

    Args:
        path: JSON datalist.
        keep_fields: when given, each entry (an object with an ``image`` key) keeps only these
            fields while the file is parsed, so the rest (``meta`` and such) is never held for all
            entries at once.

    Returns:
        the parsed datalist.

    Raises:
        DatalistError: when the file is missing, not UTF-8 JSON, or has no ``data`` list.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatalistError(
            path, [Problem(None, None, "-", "file not found", "pass the path of datalist.json")]
        ) from None
    except UnicodeDecodeError as error:
        raise DatalistError(
            path, [Problem(None, None, "-", f"not UTF-8 text ({error.reason})", "save the datalist as UTF-8 JSON")]
        ) from None

    duplicates: list[tuple[str, object]] = []  # (key, the object's image) for every key given twice

    def build(pairs: list[tuple[str, object]]) -> dict:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    duplicates.append((key, obj.get("image")))
                seen.add(key)
        if keep_fields is not None and "image" in obj:
            return {key: obj[key] for key in keep_fields if key in obj}
        return obj

    try:
        datalist = json.loads(text, object_pairs_hook=build)
    except json.JSONDecodeError as error:
        raise DatalistError(
            path,
            [
                Problem(
                    None,
                    None,
                    "-",
                    f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
                    "fix the JSON syntax",
                )
            ],
        ) from None
    except RecursionError:
        raise DatalistError(
            path, [Problem(None, None, "-", "nested deeper than a JSON reader follows", 'write {"data": [{...}, ...]}')]
        ) from None
    if duplicates:
        entries = datalist.get("data") if isinstance(datalist, dict) else None
        index_of = {e.get("image"): i for i, e in enumerate(entries or []) if isinstance(e, dict)}
        raise DatalistError(
            path,
            [
                Problem(
                    index_of.get(image) if isinstance(image, str) else None,
                    image if isinstance(image, str) else None,
                    key,
                    "given twice in one object (JSON keeps only the last value, silently)",
                    "keep one value",
                )
                for key, image in duplicates
            ],
        )
    if not isinstance(datalist, dict) or not isinstance(datalist.get("data"), list):
        raise DatalistError(
            path,
            [
                Problem(
                    None,
                    None,
                    "data",
                    "the top level must be an object with a 'data' list",
                    'write {"sites": {...}, "data": [{...}, ...]}',
                )
            ],
        )
    return datalist


def resolve_path(value: str, base_dir: str | os.PathLike) -> Path:
    """Resolve an image path from the datalist: relative paths start at the datalist's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_roi(entry: dict, size: tuple[int, int] | None) -> list[tuple[str, str]]:
    """Problems (message, fix) with the entry's ``roi`` given the image (width, height)."""
    roi = entry.get("roi")
    form = "boxes are [x0, y0, x1, y1] in original pixels, x = column, y = row, x1/y1 exclusive"
    if roi is None:
        return [("missing", f"add the NT box; {form}")]
    if not isinstance(roi, (list, tuple)) or len(roi) != 4 or not all(_is_number(v) for v in roi):
        return [(f"{roi!r} is not four finite numbers", form)]
    x0, y0, x1, y1 = (float(v) for v in roi)
    if x1 <= x0 or y1 <= y0:
        return [(f"{list(roi)} is empty or inverted (x1 <= x0 or y1 <= y0)", form)]
    if size is not None:
        width, height = size
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            return [(f"{list(roi)} lies outside the {width}x{height} image", form)]
    return []


def validate_entries(
    datalist: dict,
    base_dir: str | os.PathLike,
    check_images: bool = True,
    frame: int | None = None,
    progress: bool = False,
) -> list[Problem]:
    """Check every entry and return all problems found (an empty list means clean).

    Args:
        datalist: parsed datalist with a ``data`` list.
        base_dir: folder that relative image paths start from.
        check_images: decode every image (catches unreadable files and sizes the box check).
        frame: frame index passed to the DICOM reader.
        progress: show a progress bar.

    Returns:
        the problems, in entry order.
    """
    problems: list[Problem] = []
    if not datalist.get("data"):
        problems.append(Problem(None, None, "data", "the list is empty: no images", "add one entry per image"))
    sites = datalist.get("sites")
    site_ids: set[int] | None = None
    if sites is not None:
        if not isinstance(sites, dict) or not all(str(k).lstrip("-").isdigit() for k in sites):
            problems.append(
                Problem(
                    None,
                    None,
                    "sites",
                    f"{sites!r} must map integer ids to names",
                    'write {"0": "Hosp-1", "1": "Hosp-2"}',
                )
            )
        else:
            site_ids = {int(k) for k in sites}
    seen_ids: dict[str, int] = {}
    seen_images: dict[str, int] = {}
    entries = datalist["data"]
    for index, entry in enumerate(tqdm(entries, desc="validate", unit="img", disable=not progress)):
        if not isinstance(entry, dict):
            problems.append(
                Problem(
                    index, None, "-", f"entry is {type(entry).__name__}, not an object", "write each entry as {...}"
                )
            )
            continue
        image = entry.get("image")
        name = image if isinstance(image, str) else None

        def add(field: str, message: str, fix: str, index: int = index, name: str | None = name) -> None:
            problems.append(Problem(index, name, field, message, fix))

        size = None
        if not isinstance(image, str) or not image:
            add("image", "missing or not a string", "give the image path, relative to the datalist's folder")
        else:
            path = resolve_path(image, base_dir)
            key = str(path.resolve()) if path.exists() else str(path)
            if key in seen_images:
                add("image", f"same file as entry {seen_images[key]}", "remove the duplicate entry")
            seen_images.setdefault(key, index)
            if not path.exists():
                add(
                    "image", f"file not found at {path}", "fix the path (relative paths start at the datalist's folder)"
                )
            elif check_images:
                try:
                    loaded = read_image(path, frame)
                    size = (loaded.array.shape[1], loaded.array.shape[0])
                except ImageReadError as error:
                    add("image", f"unreadable: {error}", "re-export the image or remove the entry")
        for message, fix in _check_roi(entry, size):
            add("roi", message, fix)

        site = entry.get("site")
        if site is None:
            add("site", "missing", "give the integer site id of the hospital")
        elif isinstance(site, bool) or not isinstance(site, int):
            add("site", f"{site!r} is not an integer", "use an integer id and name it in the top-level 'sites' map")
        elif site_ids is not None and site not in site_ids:
            add("site", f"{site} is not in the 'sites' map {sorted(site_ids)}", "add the site to 'sites' or fix the id")

        case_id = entry.get("case_id")
        if not isinstance(case_id, str) or not case_id:
            add(
                "case_id",
                "missing or not a string",
                "give a unique case id (patient/case prefix keeps splits leak-free)",
            )
        elif case_id in seen_ids:
            add("case_id", f"{case_id!r} repeats entry {seen_ids[case_id]}", "give every entry a unique case_id")
        else:
            seen_ids[case_id] = index

        spacing = entry.get("pixel_spacing_mm")
        if spacing is not None:
            low, high = SPACING_RANGE_MM
            if not isinstance(spacing, (list, tuple)) or len(spacing) != 2 or not all(_is_number(v) for v in spacing):
                add(
                    "pixel_spacing_mm",
                    f"{spacing!r} is not [row, col] numbers",
                    "write [row_mm, col_mm] or null when unknown",
                )
            elif not all(low <= float(v) <= high for v in spacing):
                add(
                    "pixel_spacing_mm",
                    f"{list(spacing)} is outside {low}-{high} mm",
                    "give the spacing in millimetres per pixel, or null",
                )

        meta = entry.get("meta")
        if meta is not None and not isinstance(meta, dict):
            add("meta", f"{type(meta).__name__} instead of an object", "put free-text fields in an object under 'meta'")
        elif isinstance(meta, dict) and "nt_mm" in meta and meta["nt_mm"] is not None:
            if not _is_number(meta["nt_mm"]) or not 0 < float(meta["nt_mm"]) < 20:
                add(
                    "meta.nt_mm",
                    f"{meta['nt_mm']!r} is not a thickness in mm (0-20)",
                    "give the NT in millimetres, or null",
                )
    return problems


def load_validated_datalist(
    path: str | os.PathLike, check_images: bool = True, frame: int | None = None, progress: bool = False
) -> list[dict]:
    """Load a datalist, validate it, and return its entries with absolute image paths.

    Args:
        path: datalist JSON.
        check_images: decode every image during validation.
        frame: DICOM frame index.
        progress: show a progress bar while validating.

    Returns:
        the entries (copies) with ``image`` (and ``label``) resolved to absolute paths.

    Raises:
        DatalistError: listing every problem when the datalist is not clean.
    """
    datalist = read_datalist_json(path)
    base_dir = Path(path).resolve().parent
    problems = validate_entries(datalist, base_dir, check_images=check_images, frame=frame, progress=progress)
    if problems:
        raise DatalistError(path, problems)
    entries = []
    for entry in datalist["data"]:
        item = dict(entry)
        for key in ("image", "label"):
            if isinstance(item.get(key), str):
                item[key] = str(resolve_path(item[key], base_dir).resolve())
        entries.append(item)
    return entries


def site_names(path: str | os.PathLike) -> dict[int, str]:
    """Return the datalist's ``sites`` map with integer keys (empty when absent)."""
    sites = read_datalist_json(path).get("sites") or {}
    return {int(k): str(v) for k, v in sites.items()}
