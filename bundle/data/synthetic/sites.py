"""Site (hospital) styles of the synthetic data (SPEC 1.3, step 3).

Each site stands for one scanner family and export pipeline: probe frequency (speckle size),
gain, dynamic range, time-gain-compensation error, sector shape and depth, native output size and
aspect ratio, grey or tinted colour map, burnt-in interface text and calipers. ``Hosp-3`` is
deliberately the most different so that leaving it out shows a domain-shift drop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class SiteStyle:
    """Acquisition and export style of one site.

    Args:
        name: site name written to the datalist's ``sites`` map.
        native_size: output (width, height) in pixels at native resolution.
        frequency_mhz: centre frequency; sets the speckle size.
        sector_angle_deg: opening angle of the sector.
        apex_radius_mm: probe radius (large values with narrow angles look like a trapezoid).
        depth_mm: (min, max) imaging depth; the depth also grows with the CRL.
        dynamic_range_db: log-compression dynamic range.
        gain_db: overall gain.
        tgc_error_db: maximum depth-dependent gain error left after time-gain compensation.
        tint: RGB multipliers of the grey map, or None for a grey-level export.
        ui_color: RGB colour of burnt-in text and depth marks.
        caliper_probability: chance that NT calipers are burnt into the image.
        lateral_psf_factor: lateral beam width relative to the nominal one.
    """

    name: str
    native_size: tuple[int, int]
    frequency_mhz: float
    sector_angle_deg: float
    apex_radius_mm: float
    depth_mm: tuple[float, float]
    dynamic_range_db: float
    gain_db: float
    tgc_error_db: float
    tint: tuple[float, float, float] | None
    ui_color: tuple[int, int, int]
    caliper_probability: float
    lateral_psf_factor: float = 1.0


BASE_SITES: tuple[SiteStyle, ...] = (
    SiteStyle("Hosp-1", (960, 720), 5.0, 66.0, 35.0, (52.0, 72.0), 60.0, 0.0, 3.0, None, (230, 230, 230), 0.25),
    SiteStyle("Hosp-2", (800, 600), 4.0, 74.0, 45.0, (56.0, 76.0), 54.0, 3.0, 4.0, None, (235, 220, 90), 0.2, 1.2),
    SiteStyle(
        "Hosp-3",
        (1120, 630),
        6.5,
        42.0,
        110.0,
        (52.0, 68.0),
        45.0,
        5.0,
        7.0,
        (1.0, 0.9, 0.74),
        (120, 200, 255),
        0.4,
        0.8,
    ),
)


def site_style(site: int) -> SiteStyle:
    """Return the style of site ``site`` (0-based).

    Sites beyond the three base styles are derived deterministically from a base style with
    shifted frequency, dynamic range, gain and sector angle, so any number of sites can be made.

    Args:
        site: site index.

    Returns:
        the site style.

    Raises:
        ValueError: for a negative site index.
    """
    if site < 0:
        raise ValueError(f"site index must be >= 0, got {site}")
    if site < len(BASE_SITES):
        return BASE_SITES[site]
    base = BASE_SITES[site % len(BASE_SITES)]
    rng = np.random.default_rng(np.random.SeedSequence([9176, site]))
    return replace(
        base,
        name=f"Hosp-{site + 1}",
        frequency_mhz=float(np.clip(base.frequency_mhz * rng.uniform(0.8, 1.25), 3.0, 8.0)),
        dynamic_range_db=float(base.dynamic_range_db + rng.uniform(-6, 6)),
        gain_db=float(base.gain_db + rng.uniform(-3, 3)),
        sector_angle_deg=float(np.clip(base.sector_angle_deg + rng.uniform(-8, 8), 35, 80)),
        caliper_probability=float(rng.uniform(0.1, 0.4)),
    )


def output_size(style: SiteStyle, bound: tuple[int, int] | None) -> tuple[int, int]:
    """Return the (width, height) of a site's images, keeping the site's aspect ratio.

    Args:
        style: the site style.
        bound: (width, height) the image must fit in, or None for the native size.

    Returns:
        (width, height) in pixels.
    """
    width, height = style.native_size
    if bound is None:
        return width, height
    scale = min(bound[0] / width, bound[1] / height)
    return max(8, round(width * scale)), max(8, round(height * scale))
