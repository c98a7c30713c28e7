"""Hospital-wise splits derived at run time from ``site`` (SPEC 1.1).

The held-out site is chosen in the config; inside the source sites, cases are split into train and
validation by patient (``meta.patient_id`` when given, else the ``case_id``), seeded and stratified
by site, so no patient straddles the split and each source site keeps its share of validation.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def patient_key(entry: dict) -> str:
    """Grouping key of an entry: ``meta.patient_id`` when present, otherwise ``case_id``."""
    meta = entry.get("meta") or {}
    return str(meta.get("patient_id") or entry["case_id"])


def split_by_site(
    entries: list[dict], held_out_site: int | None, val_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[dict]]:
    """Split entries into source-site train/val and the held-out site.

    Args:
        entries: datalist entries with integer ``site`` and ``case_id``.
        held_out_site: site id to hold out entirely (None or negative, e.g. ``--held_out_site -1`` on the
            command line where None cannot be passed: no held-out split).
        val_fraction: fraction of each source site's patients used for validation.
        seed: seed of the patient shuffle.

    Returns:
        ``{"train": [...], "val": [...], "held_out": [...]}`` keeping datalist order within each.

    Raises:
        ValueError: when ``val_fraction`` is outside [0, 1) or the held-out site has no entries.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    sites = sorted({int(e["site"]) for e in entries})
    if held_out_site is not None and held_out_site < 0:
        held_out_site = None
    if held_out_site is not None and held_out_site not in sites:
        raise ValueError(f"held_out_site {held_out_site} has no images; the datalist has sites {sites}")
    groups: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, entry in enumerate(entries):
        groups[int(entry["site"])][patient_key(entry)].append(i)
    val_indices: set[int] = set()
    for site in sites:
        if site == held_out_site:
            continue
        keys = sorted(groups[site])
        rng = np.random.default_rng(np.random.SeedSequence([seed, site]))
        order = rng.permutation(len(keys))
        n_val = int(round(val_fraction * len(keys)))
        if val_fraction > 0 and len(keys) > 1:
            n_val = min(max(n_val, 1), len(keys) - 1)
        for k in order[:n_val]:
            val_indices.update(groups[site][keys[k]])
    split: dict[str, list[dict]] = {"train": [], "val": [], "held_out": []}
    for i, entry in enumerate(entries):
        if held_out_site is not None and int(entry["site"]) == held_out_site:
            split["held_out"].append(entry)
        elif i in val_indices:
            split["val"].append(entry)
        else:
            split["train"].append(entry)
    _check_trainable(split, sites, held_out_site, val_fraction)
    return split


def _check_trainable(split: dict, sites: list[int], held_out_site: int | None, val_fraction: float) -> None:
    """Refuse a split that cannot train both phases, before any training starts, with the fix."""
    if not split["train"] and not split["val"]:
        where = f"every image is in the held-out site {held_out_site}" if split["held_out"] else "no images"
        raise ValueError(
            f"no source-site images to train on ({where}; sites {sites}); hold out another site with "
            "--held_out_site, use --held_out_site -1 for none, or add images of other sites"
        )
    if not split["val"]:
        raise ValueError(
            f"no validation images (val_fraction {val_fraction}, {len(split['train'])} training images, every "
            "source site with a single patient or val_fraction 0): the best model of each phase is chosen on "
            "validation; set --val_fraction above 0 (e.g. 0.15) and give each source site at least 2 patients"
        )
    if not split["train"]:
        raise ValueError("no training images left after the validation split; lower --val_fraction or add images")
