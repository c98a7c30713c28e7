"""Montage of a datalist for visual review: a row per site, NT box drawn, plus zoomed NT crops."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from bundle.data.datalist import load_validated_datalist, site_names
from bundle.data.readers import read_image
from bundle.utils.atomic import atomic_path


def write_montage(datalist: str | os.PathLike, output: str | os.PathLike, per_site: int = 4) -> Path:
    """Draw ``per_site`` images of every site with their NT box, and a zoomed crop of each box.

    Args:
        datalist: datalist JSON (validated first).
        output: PNG to write.
        per_site: images shown per site.

    Returns:
        the written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    entries = load_validated_datalist(datalist)
    names = site_names(datalist)
    by_site: dict[int, list[dict]] = defaultdict(list)
    for entry in entries:
        if len(by_site[entry["site"]]) < per_site:
            by_site[entry["site"]].append(entry)
    sites = sorted(by_site)
    fig, axes = plt.subplots(len(sites), 2 * per_site, figsize=(3.2 * per_site * 1.5, 2.6 * len(sites)), squeeze=False)
    for row, site in enumerate(sites):
        for col in range(per_site):
            ax_img, ax_crop = axes[row, col], axes[row, per_site + col]
            ax_img.axis("off")
            ax_crop.axis("off")
            if col >= len(by_site[site]):
                continue
            entry = by_site[site][col]
            image = read_image(entry["image"]).array
            x0, y0, x1, y1 = entry["roi"]
            ax_img.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax_img.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=0.8))
            meta = entry.get("meta") or {}
            plane = "SP" if meta.get("standard_plane", True) else f"NSP ({meta.get('nonstandard_reason') or '?'})"
            ax_img.set_title(
                f"{names.get(site, site)} {entry['case_id']}\n{image.shape[1]}x{image.shape[0]} {plane}", fontsize=7
            )
            pad_x, pad_y = 0.3 * (x1 - x0), 0.6 * (y1 - y0)
            r0, r1 = int(max(0, y0 - pad_y)), int(min(image.shape[0], y1 + pad_y))
            c0, c1 = int(max(0, x0 - pad_x)), int(min(image.shape[1], x1 + pad_x))
            ax_crop.imshow(image[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax_crop.add_patch(
                Rectangle((x0 - c0, y0 - r0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=0.8)
            )
            nt = meta.get("nt_mm")
            ax_crop.set_title(f"NT box{f', NT {nt:.2f} mm' if nt else ''}", fontsize=7)
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(output)
