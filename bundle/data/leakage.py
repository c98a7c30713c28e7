"""Leakage between splits that a per-entry check cannot see: shared patients and copied images (issue 19.9).

Leave-one-hospital-out evaluation is honest only if no patient and no image is on both sides. Sites
are split whole and patients inside a site, so two risks remain: a ``meta.patient_id`` that appears
in more than one site (hold one of them out and the patient is in training too), and byte-identical
image files under different patients or sites (the same image in training and evaluation).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from bundle.data.splits import patient_key

__all__ = ["LEAKAGE_MODES", "LeakageError", "find_leakage", "check_leakage"]

LEAKAGE_MODES = ("warn", "error", "off")


class LeakageError(ValueError):
    """The datalist lets a patient or an image reach both training and evaluation."""


def _digest(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None  # unreadable files are the validator's report
    return digest.hexdigest()


def find_leakage(entries: list[dict], compare_images: bool = True) -> list[str]:
    """Every way the datalist could leak between splits, as one message each (with the fix).

    Args:
        entries: validated entries (absolute ``image`` paths, integer ``site``).
        compare_images: also look for byte-identical image files (reads every file once).

    Returns:
        the messages; empty when nothing leaks.
    """
    sites_of: dict[str, set[int]] = defaultdict(set)
    for entry in entries:
        meta = entry.get("meta") or {}
        if meta.get("patient_id") is not None:
            sites_of[patient_key(entry)].add(int(entry["site"]))
    messages = [
        f"patient_id {patient!r} has images in sites {sorted(sites)}: holding one of them out puts this patient "
        "in training too; give each patient one site, or distinct patient_ids per site if they are different people"
        for patient, sites in sorted(sites_of.items())
        if len(sites) > 1
    ]
    if compare_images:
        copies: dict[str, list[dict]] = defaultdict(list)
        for entry in entries:
            digest = _digest(entry["image"])
            if digest is not None:
                copies[digest].append(entry)
        for group in copies.values():
            owners = sorted({(int(e["site"]), patient_key(e)) for e in group})
            if len(owners) > 1:
                names = ", ".join(str(e["image"]) for e in group)
                messages.append(
                    f"byte-identical images {names} belong to different (site, patient) {owners}: the same image "
                    "can be in training and in evaluation; keep one copy"
                )
    return messages


def check_leakage(entries: list[dict], mode: str = "warn", compare_images: bool = True, warn=print) -> list[str]:
    """Apply :func:`find_leakage` as ``mode`` says: ``warn`` (report), ``error`` (refuse) or ``off``.

    Args:
        entries: validated entries.
        mode: one of :data:`LEAKAGE_MODES`.
        compare_images: also look for byte-identical image files.
        warn: called with each message in ``warn`` mode.

    Returns:
        the messages found.

    Raises:
        LeakageError: in ``error`` mode, listing every message.
        ValueError: for an unknown mode.
    """
    if mode not in LEAKAGE_MODES:
        raise ValueError(f"leakage must be one of {LEAKAGE_MODES}, got {mode!r}")
    if mode == "off":
        return []
    messages = find_leakage(entries, compare_images)
    if messages and mode == "error":
        raise LeakageError(
            "leakage between splits:\n  - " + "\n  - ".join(messages) + "\n(fix the datalist, or use leakage: warn)"
        )
    for message in messages:
        warn(f"leakage warning: {message}")
    return messages
