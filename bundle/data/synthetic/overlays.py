"""Burnt-in scanner interface: text, depth marks, NT calipers and colour map (SPEC 1.3, step 3).

Real exports carry these and models latch on to them, so the synthetic sites do too.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from bundle.data.synthetic.sites import SiteStyle
from PIL import Image, ImageDraw, ImageFont, features


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font; scalable when Pillow has FreeType, the fixed bitmap font otherwise."""
    if features.check("freetype2"):
        return ImageFont.load_default(size=size)
    return ImageFont.load_default()


def burn_in_interface(
    grey: np.ndarray,
    style: SiteStyle,
    layout_info: dict,
    sector: np.ndarray,
    calipers: list[list[float]] | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw the interface of a site onto a grey image and apply the site's colour map.

    Args:
        grey: uint8 (H, W) B-mode image.
        style: the site style (text colour, tint).
        layout_info: ``depth_mm``, ``pixel_mm`` and ``top_px`` of the image layout.
        sector: bool (H, W) sector mask (depth marks go just right of it).
        calipers: two (column, row) points to mark with "+" calipers, or None.
        rng: random generator (text contents).

    Returns:
        uint8 (H, W) for a grey export, (H, W, 3) for a tinted or coloured one.
    """
    height, width = grey.shape
    colour = style.tint is not None or len(set(style.ui_color)) > 1
    if colour:
        tint = np.asarray(style.tint or (1.0, 1.0, 1.0), dtype=np.float32)
        rgb = np.clip(grey[..., None].astype(np.float32) * tint, 0, 255).astype(np.uint8)
        canvas = Image.fromarray(rgb, mode="RGB")
        ink: tuple[int, ...] | int = style.ui_color
    else:
        canvas = Image.fromarray(grey, mode="L")
        ink = int(round(0.299 * style.ui_color[0] + 0.587 * style.ui_color[1] + 0.114 * style.ui_color[2]))
    draw = ImageDraw.Draw(canvas)

    font = _font(max(6, int(round(0.028 * height))))
    line = max(6, int(round(0.035 * height)))
    study = int(rng.integers(10000, 99999))
    draw.text((0.01 * width, 0.005 * height), f"{style.name}  ID {study}", fill=ink, font=font)
    draw.text(
        (0.01 * width, 0.005 * height + line),
        f"{style.frequency_mhz:.1f} MHz  D {layout_info['depth_mm'] / 10:.1f} cm",
        fill=ink,
        font=font,
    )
    draw.text(
        (0.70 * width, 0.005 * height), f"G {style.gain_db:+.0f}  DR {style.dynamic_range_db:.0f}", fill=ink, font=font
    )
    draw.text((0.78 * width, 0.95 * height), "NT", fill=ink, font=font)

    # Depth marks every centimetre, just right of the sector.
    cols_inside = np.nonzero(sector.any(axis=0))[0]
    if cols_inside.size:
        x_mark = min(width - 2, int(cols_inside.max()) + max(1, width // 100))
        dot = max(1, width // 300)
        for depth_cm in range(int(layout_info["depth_mm"] // 10) + 1):
            y = layout_info["top_px"] + depth_cm * 10.0 / layout_info["pixel_mm"]
            if y < height - 1:
                draw.rectangle([x_mark, y, x_mark + dot, y + dot], fill=ink)

    if calipers is not None:
        arm = max(1.5, 1.2 / layout_info["pixel_mm"])
        for cx, cy in calipers:
            draw.line([(cx - arm, cy), (cx + arm, cy)], fill=ink, width=1)
            draw.line([(cx, cy - arm), (cx, cy + arm)], fill=ink, width=1)
    return np.asarray(canvas)
