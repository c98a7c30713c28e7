"""Write a synthetic multi-site dataset and its datalist (SPEC 1.3, step 5).

Images are rendered in parallel, but each one depends only on ``(seed, site, index)``, so the
files and the datalist are byte-identical for any number of workers.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from bundle.data.synthetic.formats import SUFFIXES, write_dicom, write_nifti, write_png
from bundle.data.synthetic.generator import generate_case
from bundle.data.synthetic.sites import site_style
from bundle.utils.atomic import atomic_write_json
from tqdm import tqdm

GENERATOR_VERSION = "1.0"


@dataclass(frozen=True)
class SynthTask:
    """Everything one worker needs to render and write one image."""

    output_dir: str
    seed: int
    site: int
    index: int
    size: tuple[int, int] | None
    formats: tuple[str, ...]
    masks: bool
    case_options: tuple[tuple[str, object], ...] = ()


def parse_size(text: str) -> tuple[int, int] | None:
    """Parse ``native`` or ``WxH`` (e.g. ``128x128``).

    Args:
        text: the size argument.

    Returns:
        None for native, otherwise (width, height).

    Raises:
        ValueError: when the text is neither.
    """
    if text.strip().lower() == "native":
        return None
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is neither 'native' nor WxH such as 128x128") from None
    if width < 16 or height < 16:
        raise ValueError(f"size {text!r} is too small; use at least 16x16")
    return width, height


def render_and_write(task: SynthTask) -> dict:
    """Render one image, write its files, and return its datalist entry."""
    case = generate_case(task.seed, task.site, task.index, task.size, **dict(task.case_options))
    style = site_style(task.site)
    case_id = f"s{task.site}_{task.index:06d}"
    root = Path(task.output_dir)
    files = {}
    for fmt in task.formats:
        relative = f"images/site{task.site}/{case_id}{SUFFIXES[fmt]}"
        spacing = case.annotation["pixel_spacing_mm"]
        if fmt == "png":
            write_png(root / relative, case.image)
        elif fmt == "dcm":
            write_dicom(root / relative, case.image, spacing, style.name, f"{task.seed}-{case_id}")
        else:
            write_nifti(root / relative, case.image, spacing)
        files[fmt] = relative
    entry = {
        "image": files[task.formats[0]],
        "roi": case.annotation["roi"],
        "site": task.site,
        "case_id": case_id,
        "pixel_spacing_mm": case.annotation["pixel_spacing_mm"],
        "meta": {**case.annotation["meta"], "site_name": style.name, "files": files},
    }
    if task.masks:
        entry["label"] = f"labels/site{task.site}/{case_id}.png"
        write_png(root / entry["label"], case.labels)
    return entry


#: written first into every folder the generator fills; only such a folder (or an empty one) is written again
MARKER = ".fetal_nt_synthetic"


def claim_output_folder(root: Path) -> None:
    """Make ``root`` the generator's: refuse a folder that holds anything the generator did not write.

    Args:
        root: the dataset folder (created when missing).

    Raises:
        FileExistsError: ``root`` is a file, or a non-empty folder without the generator's marker.
    """
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: is a file; synthetic data needs a new or empty folder (choose another path)")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise FileExistsError(
            f"{root}: the folder holds files the synthetic generator did not write; it never writes over them. "
            "Choose a new or empty folder, or check the path if you meant an existing datalist"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("written by bundle.data.synthetic; the generator may replace this folder's files\n")


def write_synthetic_dataset(
    output_dir: str | os.PathLike,
    per_site: int,
    sites: int = 3,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    workers: int = 1,
    formats: tuple[str, ...] = ("png",),
    masks: bool = False,
    progress: bool = True,
    standard_only: bool = False,
    calipers: bool | None = None,
) -> Path:
    """Render ``per_site`` images for each of ``sites`` sites and write ``datalist.json``.

    Args:
        output_dir: dataset folder (created).
        per_site: images per site.
        sites: number of sites (3 base styles, more are derived).
        seed: dataset seed.
        size: (width, height) bound or None for each site's native size.
        workers: worker processes (1 renders in this process).
        formats: image formats to write, from ``png``, ``dcm``, ``nii``; the first is the
            datalist's ``image``, all are listed under ``meta.files``.
        masks: also write tissue label maps (``label`` key), e.g. for segmentation guides.
        progress: show a progress bar.
        standard_only: only standard planes (e.g. for measurement studies).
        calipers: force burnt-in NT calipers on (True) or off (False); None draws them per site.

    Returns:
        path of the written datalist.

    Raises:
        ValueError: for an unknown format or non-positive counts.
        FileExistsError: ``output_dir`` holds files the generator did not write (they are left untouched).
    """
    unknown = [fmt for fmt in formats if fmt not in SUFFIXES]
    if unknown or not formats:
        raise ValueError(f"unknown image format(s) {unknown}; choose from {sorted(SUFFIXES)}")
    if per_site < 1 or sites < 1:
        raise ValueError(f"--per-site ({per_site}) and --sites ({sites}) must be at least 1")
    root = Path(output_dir)
    claim_output_folder(root)
    options = tuple(
        (k, v)
        for k, v in (("standard_plane", True if standard_only else None), ("calipers", calipers))
        if v is not None
    )
    tasks = [
        SynthTask(str(root), seed, site, index, size, tuple(formats), masks, options)
        for site in range(sites)
        for index in range(per_site)
    ]
    bar = tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress)
    entries = []
    if workers <= 1:
        for task in tasks:
            entries.append(render_and_write(task))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for entry in pool.map(render_and_write, tasks, chunksize=4):
                entries.append(entry)
                bar.update()
    bar.close()
    datalist = {
        "name": "fetal_nt_synthetic",
        "description": "Synthetic first-trimester mid-sagittal NT images (convolution model of B-mode), "
        "one style per site. Boxes are [x0, y0, x1, y1] in original pixels, x1/y1 exclusive.",
        "generator": {
            "version": GENERATOR_VERSION,
            "seed": seed,
            "per_site": per_site,
            "size": size and list(size),
            "options": dict(options),
        },
        "sites": {str(site): site_style(site).name for site in range(sites)},
        "data": entries,
    }
    path = root / "datalist.json"
    atomic_write_json(path, datalist)
    return path
