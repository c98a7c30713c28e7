"""One synthetic first-trimester NT image with its exact ground truth (SPEC 1.3).

:func:`generate_case` is a pure function of ``(seed, site, index)`` and the requested size: it draws
everything from ``np.random.default_rng(SeedSequence([seed, site, index]))``, so an image is the
same whichever worker makes it and in whatever order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from bundle.data.synthetic.acoustics import log_compress, psf_sigmas_mm, scan_convert, speckle_envelope, tgc_error_db
from bundle.data.synthetic.anatomy import NONSTANDARD_REASONS, STRUCTURE_LABELS, build_anatomy
from bundle.data.synthetic.overlays import burn_in_interface
from bundle.data.synthetic.scene import ProbeGeometry, Scene, place_fetus
from bundle.data.synthetic.sites import SiteStyle, output_size, site_style

NONSTANDARD_PROBABILITY = 0.3
# Internal rendering resolution never coarser than this; small outputs are rendered finer and
# box-averaged, like a real export that was downsampled.
FINEST_USEFUL_PIXEL_MM = 0.3
TOP_MARGIN, BOTTOM_MARGIN, SIDE_MARGIN = 0.08, 0.03, 0.05
NT_BOX_MARGIN_MM = 0.6
IDEAL_STREAM = 1  # SeedSequence suffix of the speckle draws averaged by ``speckle_average``


@dataclass
class SyntheticCase:
    """A rendered image with its ground truth.

    Args:
        image: uint8 (H, W) grey or (H, W, 3) RGB export.
        labels: uint8 (H, W) tissue labels (``anatomy.LABELS``), 0 outside the sector.
        sector: bool (H, W), True inside the imaged sector.
        annotation: datalist-ready ground truth (roi, spacing, meta fields).
        intermediates: polar-grid arrays (labels, pre-log envelope) when requested.
    """

    image: np.ndarray
    labels: np.ndarray
    sector: np.ndarray
    annotation: dict
    intermediates: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ImageLayout:
    """Placement of the sector on the output image: probe-frame mm to pixel coordinates.

    Args:
        width: output width in pixels.
        height: output height in pixels.
        pixel_mm: isotropic pixel size.
        z_top_mm: depth shown at the top margin.
        top_px: height of the top margin (interface text) in pixels.
    """

    width: int
    height: int
    pixel_mm: float
    z_top_mm: float
    top_px: float

    @classmethod
    def fit(cls, probe: ProbeGeometry, width: int, height: int) -> ImageLayout:
        """Fit the sector into the image inside the interface margins."""
        x_min, x_max, z_min, z_max = probe.bounds()
        pixel_mm = max(
            (x_max - x_min) / (width * (1 - 2 * SIDE_MARGIN)),
            (z_max - z_min) / (height * (1 - TOP_MARGIN - BOTTOM_MARGIN)),
        )
        return cls(width, height, float(pixel_mm), float(z_min), TOP_MARGIN * height)

    def to_pixels(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map probe-frame mm to continuous (column, row) pixel coordinates (pixel i spans [i, i+1))."""
        return x / self.pixel_mm + 0.5 * self.width, (z - self.z_top_mm) / self.pixel_mm + self.top_px

    def pixel_centres_mm(self, oversample: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return probe-frame (x, z) of the centres of an ``oversample``-times finer pixel grid."""
        cols = (np.arange(self.width * oversample) + 0.5) / oversample
        rows = (np.arange(self.height * oversample) + 0.5) / oversample
        x = (cols - 0.5 * self.width) * self.pixel_mm
        z = (rows - self.top_px) * self.pixel_mm + self.z_top_mm
        return np.meshgrid(x, z)


def ideal_grey(
    labels: np.ndarray,
    sigma_samples: tuple[float, float],
    gain_db: np.ndarray | float,
    dynamic_range_db: float,
    realizations: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mean displayed grey level of a label map over independent speckle draws (polar grid).

    The conditional mean of the image given its anatomy and scanner settings: what an ideal
    reconstruction under a squared error would draw (no network can know the speckle itself).

    Args:
        labels: (radius, angle) tissue labels.
        sigma_samples: PSF standard deviations in samples, as :func:`speckle_envelope`.
        gain_db: gain (scalar or per depth), as :func:`log_compress`.
        dynamic_range_db: displayed dynamic range.
        realizations: speckle draws averaged (at least 1).
        rng: random generator of the draws.

    Returns:
        float32 grey levels in [0, 255].
    """
    total = np.zeros(labels.shape, dtype=np.float64)
    for _ in range(realizations):
        total += log_compress(speckle_envelope(labels, sigma_samples, rng), gain_db, dynamic_range_db)
    return (total / realizations).astype(np.float32)


def _depth_mm(style: SiteStyle, crl_mm: float, rng: np.random.Generator) -> float:
    """Imaging depth: larger fetuses need a deeper field of view."""
    low, high = style.depth_mm
    return float(low + (high - low) * np.clip((crl_mm - 45.0) / 39.0, 0, 1) + rng.uniform(-3, 3))


def _structure_boxes(labels: np.ndarray) -> dict[str, list[float]]:
    """Pixel bounding boxes ``[x0, y0, x1, y1]`` (x1, y1 exclusive) of every visible structure."""
    boxes = {}
    for name, label in STRUCTURE_LABELS.items():
        if name == "NT":
            continue
        rows, cols = np.nonzero(labels == label)
        if rows.size >= 2:
            boxes[name] = [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]
    return boxes


def _nt_box(scene: Scene, layout: ImageLayout) -> list[float]:
    """The NT region of interest: the translucency with both bounding lines, plus a margin."""
    outline = scene.anatomy.nt_outline()
    x, z = scene.to_probe(outline[:, 0], outline[:, 1])
    cols, rows = layout.to_pixels(x, z)
    margin = NT_BOX_MARGIN_MM / layout.pixel_mm
    box = [cols.min() - margin, rows.min() - margin, cols.max() + margin, rows.max() + margin]
    box = [max(0.0, box[0]), max(0.0, box[1]), min(float(layout.width), box[2]), min(float(layout.height), box[3])]
    return [round(float(b), 2) for b in box]


def generate_case(
    seed: int,
    site: int,
    index: int,
    size: tuple[int, int] | None = None,
    crl_mm: float | None = None,
    nt_mm: float | None = None,
    standard_plane: bool | None = None,
    calipers: bool | None = None,
    keep_intermediates: bool = False,
    speckle_average: int = 0,
) -> SyntheticCase:
    """Render one synthetic NT image.

    Args:
        seed: dataset seed.
        site: site index (see :func:`bundle.data.synthetic.sites.site_style`).
        index: image index within the site.
        size: (width, height) bound of the output, the site's aspect ratio kept; None for native.
        crl_mm: force the crown-rump length (tests, sweeps); drawn when None.
        nt_mm: force the NT thickness; drawn when None.
        standard_plane: force a standard (True) or non-standard (False) plane; drawn when None.
        calipers: force burnt-in NT calipers on or off; drawn with the site's probability when None.
        keep_intermediates: also return the polar labels and pre-log envelope.
        speckle_average: when above 0, render the scene's speckle-free ideal instead: the mean grey
            level of this many independent speckle draws (:func:`ideal_grey`). Scene, gains,
            interface and ground truth are those of the plain image (same ``rng`` draws), so the
            ideal lies pixel for pixel on it: the best any reconstruction that cannot reproduce the
            image's own speckle can do.

    Returns:
        the rendered case.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, site, index]))
    style = site_style(site)
    width, height = output_size(style, size)

    is_standard = bool(rng.random() >= NONSTANDARD_PROBABILITY) if standard_plane is None else standard_plane
    reason = None if is_standard else str(NONSTANDARD_REASONS[rng.integers(len(NONSTANDARD_REASONS))])
    anatomy = build_anatomy(rng, crl_mm=crl_mm, nt_mm=nt_mm, face_visible=reason != "oblique")
    probe = ProbeGeometry(
        style.apex_radius_mm, _depth_mm(style, anatomy.crl_mm, rng), np.deg2rad(style.sector_angle_deg)
    )
    tilt_range = (0.45, 0.7) if reason == "tilted" else (0.0, 0.17)
    scene = place_fetus(rng, anatomy, probe, tilt_range_rad=tilt_range)
    layout = ImageLayout.fit(probe, width, height)

    # Polar grid at the internal resolution.
    oversample = int(np.clip(np.ceil(layout.pixel_mm / FINEST_USEFUL_PIXEL_MM), 1, 3))
    step_mm = layout.pixel_mm / oversample
    n_radius = int(np.ceil(probe.depth_mm / step_mm))
    n_angle = int(np.ceil(probe.sector_angle_rad * probe.max_radius_mm / step_mm))
    radius_step = probe.depth_mm / n_radius
    angle_step = probe.sector_angle_rad / n_angle
    radius = probe.apex_radius_mm + (np.arange(n_radius) + 0.5) * radius_step
    angle = -0.5 * probe.sector_angle_rad + (np.arange(n_angle) + 0.5) * angle_step
    polar_x = radius[:, None] * np.sin(angle)[None, :]
    polar_z = radius[:, None] * np.cos(angle)[None, :]
    polar_labels = scene.labels(polar_x, polar_z)

    axial_mm, lateral_mm = psf_sigmas_mm(style.frequency_mhz * rng.uniform(0.95, 1.05), style.lateral_psf_factor)
    if reason == "blurred":
        axial_mm, lateral_mm = 2.5 * axial_mm + 0.3, 2.5 * lateral_mm + 0.6
    mid_radius = probe.apex_radius_mm + 0.5 * probe.depth_mm
    sigmas = (axial_mm / radius_step, lateral_mm / (mid_radius * angle_step))
    envelope = speckle_envelope(polar_labels, sigmas, rng)
    gain = style.gain_db + rng.uniform(-2.0, 2.0) + tgc_error_db(rng, n_radius, style.tgc_error_db)
    grey_polar = log_compress(envelope, gain, style.dynamic_range_db)
    if speckle_average > 0:
        speckle_rng = np.random.default_rng(np.random.SeedSequence([seed, site, index, IDEAL_STREAM]))
        grey_polar = ideal_grey(polar_labels, sigmas, gain, style.dynamic_range_db, speckle_average, speckle_rng)

    def polar_indices(oversample_factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, z = layout.pixel_centres_mm(oversample_factor)
        r, theta = probe.to_polar(x, z)
        inside = probe.contains(x, z)
        return (
            (r - probe.apex_radius_mm) / radius_step - 0.5,
            (theta + 0.5 * probe.sector_angle_rad) / angle_step - 0.5,
            inside,
        )

    r_fine, a_fine, inside_fine = polar_indices(oversample)
    grey = scan_convert(grey_polar, r_fine, a_fine, inside_fine, order=1)
    if oversample > 1:
        grey = grey.reshape(height, oversample, width, oversample).mean(axis=(1, 3))
    r_idx, a_idx, sector = (r_fine, a_fine, inside_fine) if oversample == 1 else polar_indices(1)
    labels = scan_convert(polar_labels, r_idx, a_idx, sector, order=0)

    outer, inner = anatomy.nt_points()
    px, pz = scene.to_probe(np.array([outer[0], inner[0]]), np.array([outer[1], inner[1]]))
    cols, rows = layout.to_pixels(px, pz)
    nt_points = [[round(float(c), 3), round(float(r), 3)] for c, r in zip(cols, rows, strict=True)]
    draw_calipers = bool(rng.random() < style.caliper_probability) if calipers is None else calipers
    image = burn_in_interface(
        np.clip(np.rint(grey), 0, 255).astype(np.uint8),
        style,
        layout_info={"depth_mm": probe.depth_mm, "pixel_mm": layout.pixel_mm, "top_px": layout.top_px},
        sector=sector,
        calipers=nt_points if draw_calipers else None,
        rng=rng,
    )

    roi = _nt_box(scene, layout)
    structures = {"NT": roi, **_structure_boxes(labels)}
    annotation = {
        "roi": roi,
        "pixel_spacing_mm": [round(layout.pixel_mm, 6), round(layout.pixel_mm, 6)],
        "meta": {
            "nt_mm": round(anatomy.nt_mm, 4),
            "nt_points": nt_points,
            "crl_mm": round(anatomy.crl_mm, 3),
            "standard_plane": is_standard,
            "nonstandard_reason": reason,
            "structures": structures,
            "calipers": draw_calipers,
            "head_side": "right" if scene.facing > 0 else "left",
            "tilt_deg": round(float(np.rad2deg(scene.tilt_rad)), 3),
            "frequency_mhz": style.frequency_mhz,
            "synthetic": {"seed": seed, "site": site, "index": index},
        },
    }
    intermediates = {}
    if keep_intermediates:
        intermediates = {"polar_labels": polar_labels, "envelope": envelope, "scene": scene, "layout": layout}
    return SyntheticCase(image=image, labels=labels, sector=sector, annotation=annotation, intermediates=intermediates)
