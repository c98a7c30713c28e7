"""Anatomy label map of a first-trimester mid-sagittal view (SPEC 1.3, step 1).

The fetus is described in its own frame: ``u`` runs along the long axis towards the crown and ``v``
points anteriorly (towards the face and belly), both in millimetres with the origin near the neck.
The posterior (back) and anterior (front) body contours are smooth 1-D profiles ``back(u)`` and
``front(u)`` built as the smooth union of the head and trunk ellipses. The nuchal translucency is
carved under the skin of the neck, where ``back(u)`` has its local maximum ``u0`` (the concave
neck): there both NT borders are parallel to the long axis, so the NT thickness, the distance
between the inner border of the skin line and the edge of the nuchal soft tissue, equals the
sampled ``nt_mm`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tissue labels; the order of painting (not the number) decides which tissue wins an overlap.
LABELS: dict[str, int] = {
    "background": 0,
    "maternal_wall": 1,
    "myometrium": 2,
    "placenta": 3,
    "chorionic_fluid": 4,
    "amniotic_fluid": 5,
    "amnion": 6,
    "soft_tissue": 7,
    "skin": 8,
    "nt": 9,
    "nuchal_tissue": 10,
    "spine": 11,
    "skull": 12,
    "brain": 13,
    "thalami": 14,
    "midbrain": 15,
    "fourth_ventricle": 16,
    "cisterna_magna": 17,
    "nasal_bone": 18,
    "nasal_skin": 19,
    "nasal_tip": 20,
    "palate": 21,
}

# Structure names as the Shenzhen annotation sheet spells them, with the label that draws them.
STRUCTURE_LABELS: dict[str, int] = {
    "thalami": LABELS["thalami"],
    "midbrain": LABELS["midbrain"],
    "palate": LABELS["palate"],
    "4th ventricle": LABELS["fourth_ventricle"],
    "cisterna magna": LABELS["cisterna_magna"],
    "NT": LABELS["nt"],
    "nasal tip": LABELS["nasal_tip"],
    "nasal skin": LABELS["nasal_skin"],
    "nasal bone": LABELS["nasal_bone"],
}

NONSTANDARD_REASONS = ("oblique", "blurred", "tilted")
PLATEAU = 0.4  # flat share of the NT half width


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in a 2-D frame.

    Args:
        center: (first, second) coordinates of the centre in mm.
        axes: semi-axes in mm along the ellipse's own first and second directions.
        angle: rotation of the ellipse's first axis in radians.
    """

    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float = 0.0

    def local(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the coordinates of points in the ellipse frame normalised by the semi-axes."""
        da, db = a - self.center[0], b - self.center[1]
        c, s = np.cos(self.angle), np.sin(self.angle)
        return (c * da + s * db) / self.axes[0], (-s * da + c * db) / self.axes[1]

    def radius(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return the normalised radius (1 on the boundary) of each point."""
        p, q = self.local(a, b)
        return np.sqrt(p * p + q * q)

    def vertical_extent(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the lowest and highest second coordinate inside the ellipse at each first coordinate.

        Args:
            a: first coordinates.

        Returns:
            ``(low, high)``; ``+inf``/``-inf`` where the vertical line misses the ellipse.
        """
        c, s = np.cos(self.angle), np.sin(self.angle)
        ra, rb = self.axes
        da = a - self.center[0]
        # Solve ((c da + s db)/ra)^2 + ((-s da + c db)/rb)^2 = 1 for db.
        qa = (s / ra) ** 2 + (c / rb) ** 2
        qb = 2 * da * (c * s / ra**2 - s * c / rb**2)
        qc = da**2 * ((c / ra) ** 2 + (s / rb) ** 2) - 1.0
        disc = qb * qb - 4 * qa * qc
        root = np.sqrt(np.clip(disc, 0.0, None))
        low = np.where(disc > 0, (-qb - root) / (2 * qa) + self.center[1], np.inf)
        high = np.where(disc > 0, (-qb + root) / (2 * qa) + self.center[1], -np.inf)
        return low, high


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: equal to ``min(a, b)`` where ``|a - b| >= k``, smooth elsewhere."""
    finite = np.isfinite(a) & np.isfinite(b)
    a_f = np.where(finite, a, 0.0)
    b_f = np.where(finite, b, 0.0)
    h = np.clip(0.5 + 0.5 * (b_f - a_f) / k, 0.0, 1.0)
    blended = b_f * (1 - h) + a_f * h - k * h * (1 - h)
    return np.where(finite, blended, np.minimum(a, b))


@dataclass(frozen=True)
class FetalAnatomy:
    """A sampled fetus in its own frame (mm); see the module docstring for the frame.

    Args:
        crl_mm: crown-rump length.
        nt_mm: ground-truth NT thickness.
        head: head ellipse (after flexion).
        trunk: trunk ellipse.
        u_grid: sample positions of the body profiles.
        back: posterior contour ``back(u)`` on ``u_grid`` (``inf`` outside the body).
        front: anterior contour ``front(u)`` on ``u_grid`` (``-inf`` outside the body).
        neck_u: position ``u0`` of the NT measurement (local maximum of ``back``).
        nt_half_width_mm: half length of the translucency along the neck.
        skin_mm: skin line thickness.
        nuchal_tissue_mm: thickness of the echogenic soft tissue over the cervical spine.
        amnion: amnion ellipse.
        face_visible: False for an oblique (non-standard) section missing nasal tip and palate.
    """

    crl_mm: float
    nt_mm: float
    head: Ellipse
    trunk: Ellipse
    u_grid: np.ndarray
    back: np.ndarray
    front: np.ndarray
    neck_u: float
    nt_half_width_mm: float
    skin_mm: float
    nuchal_tissue_mm: float
    amnion: Ellipse
    face_visible: bool

    @property
    def neck_back_v(self) -> float:
        """``back(u0)``: the outer surface of the skin at the measurement point."""
        return float(np.interp(self.neck_u, self.u_grid, self.back))

    def nt_points(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Return the NT caliper points ``(outer, inner)`` in the fetal frame (mm).

        The outer point lies on the inner border of the skin line, the inner point on the edge of
        the nuchal soft tissue; their distance is ``nt_mm``.
        """
        v_outer = self.neck_back_v + self.skin_mm
        return (self.neck_u, v_outer), (self.neck_u, v_outer + self.nt_mm)

    def nt_thickness_profile(self, u: np.ndarray) -> np.ndarray:
        """Translucency thickness along the neck: ``nt_mm`` on a central plateau, raised-cosine flanks.

        The plateau (40 % of the half width) keeps the band's thickness where the lateral
        point-spread function averages along the neck; the maximum, ``nt_mm``, is reached at ``u0``.
        """
        x = np.abs(u - self.neck_u) / self.nt_half_width_mm
        flank = np.cos(0.5 * np.pi * np.clip((x - PLATEAU) / (1 - PLATEAU), 0, 1)) ** 2
        return np.where(x < 1, self.nt_mm * flank, 0.0)

    def nt_outline(self, n: int = 64) -> np.ndarray:
        """Return points (fetal frame) bounding the NT region including both bounding lines.

        Args:
            n: samples along the neck.

        Returns:
            array of shape (2 n, 2) with ``(u, v)`` rows.
        """
        u = np.linspace(self.neck_u - self.nt_half_width_mm, self.neck_u + self.nt_half_width_mm, n)
        back = np.interp(u, self.u_grid, self.back)
        outer = np.stack([u, back], axis=1)
        inner = np.stack([u, back + self.skin_mm + self.nt_thickness_profile(u) + self.nuchal_tissue_mm], 1)
        return np.concatenate([outer, inner])


def sample_nt_mm(rng: np.random.Generator, crl_mm: float, tail_probability: float = 0.06) -> float:
    """Draw an NT thickness: log-normal with a median rising from 1.2 to 1.9 mm over CRL 45-84 mm.

    Args:
        rng: random generator.
        crl_mm: crown-rump length.
        tail_probability: chance of an increased NT drawn uniformly from 3.5-6 mm.

    Returns:
        NT thickness in mm.
    """
    if rng.random() < tail_probability:
        return float(rng.uniform(3.5, 6.0))
    median = 1.2 + 0.7 * np.clip((crl_mm - 45.0) / 39.0, 0.0, 1.0)
    return float(np.clip(median * np.exp(0.22 * rng.standard_normal()), 0.6, 3.4))


def build_anatomy(
    rng: np.random.Generator, crl_mm: float | None = None, nt_mm: float | None = None, face_visible: bool = True
) -> FetalAnatomy:
    """Sample a fetus (shape, flexion, NT) in the fetal frame.

    Args:
        rng: random generator (the only source of randomness).
        crl_mm: crown-rump length; drawn from U(45, 84) when None.
        nt_mm: NT thickness; drawn with :func:`sample_nt_mm` when None.
        face_visible: whether the section shows nasal bone, nasal tip and palate.

    Returns:
        the anatomy with its body profiles and the exact NT measurement point.
    """
    crl = float(rng.uniform(45.0, 84.0)) if crl_mm is None else float(crl_mm)
    nt = sample_nt_mm(rng, crl) if nt_mm is None else float(nt_mm)
    flexion = float(rng.uniform(-0.12, 0.12))
    head_axes = (crl * rng.uniform(0.185, 0.205), crl * rng.uniform(0.155, 0.172))
    cu, cv = 0.16 * crl, 0.035 * crl
    # Flexion turns the head about the neck.
    hc = (cu * np.cos(flexion) - cv * np.sin(flexion), cu * np.sin(flexion) + cv * np.cos(flexion))
    head = Ellipse(hc, head_axes, flexion)
    trunk = Ellipse((-0.25 * crl, -0.015 * crl), (0.31 * crl, crl * rng.uniform(0.14, 0.16)), 0.04)

    u_grid = np.linspace(-0.65 * crl, 0.45 * crl, 2048)
    h_low, h_high = head.vertical_extent(u_grid)
    t_low, t_high = trunk.vertical_extent(u_grid)
    k = 0.10 * crl  # fills the notch between head and trunk: the neck
    back = smooth_min(h_low, t_low, k)
    front = -smooth_min(-h_high, -t_high, k)

    window = np.abs(u_grid) < 0.12 * crl
    candidates = np.where(window & np.isfinite(back))[0]
    i = candidates[np.argmax(back[candidates])]
    # Refine the maximum with a parabola through the three nearest samples.
    y0, y1, y2 = back[i - 1], back[i], back[i + 1]
    denom = y0 - 2 * y1 + y2
    offset = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
    neck_u = float(u_grid[i] + offset * (u_grid[1] - u_grid[0]))

    amnion_gap = crl * rng.uniform(0.07, 0.16)
    amnion = Ellipse(
        (-0.08 * crl, 0.0), (0.6 * crl + amnion_gap, 0.26 * crl + amnion_gap), float(rng.uniform(-0.1, 0.1))
    )
    return FetalAnatomy(
        crl_mm=crl,
        nt_mm=nt,
        head=head,
        trunk=trunk,
        u_grid=u_grid,
        back=back,
        front=front,
        neck_u=neck_u,
        nt_half_width_mm=float(crl * rng.uniform(0.10, 0.13)),
        skin_mm=float(rng.uniform(0.45, 0.65)),
        nuchal_tissue_mm=float(rng.uniform(0.6, 0.9)),
        amnion=amnion,
        face_visible=face_visible,
    )


def _segment_distance(u: np.ndarray, v: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    """Distance of points to the segment p0-p1."""
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(u - p0[0] - t * du, v - p0[1] - t * dv)


def fetal_labels(anatomy: FetalAnatomy, u: np.ndarray, v: np.ndarray, labels: np.ndarray) -> None:
    """Paint the fetus and the amnion into ``labels`` in place.

    Args:
        anatomy: the sampled fetus.
        u: fetal-frame long-axis coordinate of each point (mm).
        v: fetal-frame anterior coordinate of each point (mm).
        labels: integer label array of the same shape, already holding the environment.
    """
    a = anatomy
    amnion_r = a.amnion.radius(u, v)
    amnion_line = 0.2 / max(a.amnion.axes)
    labels[amnion_r < 1.0] = LABELS["amniotic_fluid"]
    labels[np.abs(amnion_r - 1.0) < amnion_line] = LABELS["amnion"]
    # Everything else lies inside the amnion: paint only those points.
    near = np.nonzero(amnion_r < 1.0)
    if near[0].size:
        sub = labels[near]
        _paint_fetus(a, u[near], v[near], sub)
        labels[near] = sub


def _paint_fetus(a: FetalAnatomy, u: np.ndarray, v: np.ndarray, labels: np.ndarray) -> None:
    """Paint the fetal body, head, spine, skin, NT and face into flat ``labels`` in place."""
    back = np.interp(u, a.u_grid, a.back, left=np.inf, right=np.inf)
    front = np.interp(u, a.u_grid, a.front, left=-np.inf, right=-np.inf)
    inside = (v >= back) & (v <= front)
    if not inside.any():
        return
    du = a.u_grid[1] - a.u_grid[0]
    slope_back = np.interp(u, a.u_grid, np.gradient(np.where(np.isfinite(a.back), a.back, 0), du))
    slope_front = np.interp(u, a.u_grid, np.gradient(np.where(np.isfinite(a.front), a.front, 0), du))
    # Perpendicular distance to each contour, approximated from the vertical one and the slope.
    d_back = (v - back) / np.sqrt(1 + np.minimum(slope_back**2, 40.0))
    d_front = (front - v) / np.sqrt(1 + np.minimum(slope_front**2, 40.0))
    finite_u = a.u_grid[np.isfinite(a.back)]
    d_ends = np.minimum(u - finite_u[0], finite_u[-1] - u)
    d_surface = np.minimum(np.minimum(d_back, d_front), d_ends)

    body = np.where(inside)
    bu, bv = u[body], v[body]
    lab = np.full(bu.shape, LABELS["soft_tissue"], dtype=labels.dtype)

    # Head: brain, skull ring (not over the face), inner structures.
    head = a.head
    hr = head.radius(bu, bv)
    hp, hq = head.local(bu, bv)  # normalised head coordinates: p towards the crown, q anterior
    face = (hq > 0.45) & (hp < 0.55)
    skull_base = (hp < -0.45) & (hq > -0.6)  # where the head joins the neck and face
    lab[(hr < 0.92) & ~face] = LABELS["brain"]
    lab[(hr >= 0.88) & (hr < 0.96) & ~face & ~skull_base] = LABELS["skull"]

    def head_ellipse(p: float, q: float, ap: float, aq: float, angle: float = 0.0) -> np.ndarray:
        return ((hp - p) * np.cos(angle) + (hq - q) * np.sin(angle)) ** 2 / ap**2 + (
            -(hp - p) * np.sin(angle) + (hq - q) * np.cos(angle)
        ) ** 2 / aq**2 < 1.0

    lab[head_ellipse(0.08, 0.02, 0.24, 0.15)] = LABELS["thalami"]
    lab[head_ellipse(-0.10, -0.28, 0.16, 0.11, 0.3)] = LABELS["midbrain"]
    lab[head_ellipse(-0.24, -0.50, 0.15, 0.045, 0.45)] = LABELS["fourth_ventricle"]
    lab[head_ellipse(-0.30, -0.70, 0.15, 0.06, 0.5)] = LABELS["cisterna_magna"]

    # Spine: beads under the back from the neck to the rump.
    spacing = 0.028 * a.crl_mm
    k = np.round((bu - a.neck_u + 0.04 * a.crl_mm) / spacing)
    bead_u = a.neck_u - 0.04 * a.crl_mm + k * spacing
    bead_v = np.interp(bead_u, a.u_grid, a.back) + 0.055 * a.crl_mm
    on_spine = (k <= 0) & (bead_u > finite_u[0] + 0.1 * a.crl_mm)
    bead = on_spine & (np.hypot(bu - bead_u, bv - bead_v) < 0.011 * a.crl_mm)
    lab[bead] = LABELS["spine"]

    # Skin everywhere on the surface, then the nuchal region under the neck skin.
    db = d_back[body]
    lab[d_surface[body] < a.skin_mm] = LABELS["skin"]
    thickness = a.nt_thickness_profile(bu)
    near_neck = np.abs(bu - a.neck_u) < 1.3 * a.nt_half_width_mm
    nt_band = (db >= a.skin_mm) & (db < a.skin_mm + thickness)
    tissue = near_neck & (db >= a.skin_mm + thickness) & (db < a.skin_mm + thickness + a.nuchal_tissue_mm)
    lab[tissue] = LABELS["nuchal_tissue"]
    lab[nt_band] = LABELS["nt"]
    labels[body] = lab

    if a.face_visible:
        _paint_face(a, u, v, labels)


def _paint_face(anatomy: FetalAnatomy, u: np.ndarray, v: np.ndarray, labels: np.ndarray) -> None:
    """Paint palate, nasal bone, nasal skin and nasal tip of a mid-sagittal profile."""
    head = anatomy.head
    a_axis, b_axis = head.axes
    near = np.hypot(u - head.center[0], v - head.center[1]) < 1.5 * max(a_axis, b_axis)
    if not near.any():
        return
    index = np.nonzero(near)
    u, v, sub = u[index], v[index], labels[index]

    def to_fetal(p: float, q: float) -> tuple[float, float]:
        c, s = np.cos(head.angle), np.sin(head.angle)
        return head.center[0] + c * p * a_axis - s * q * b_axis, head.center[1] + s * p * a_axis + c * q * b_axis

    scale = anatomy.crl_mm / 60.0
    segments = (
        ("palate", (-0.50, 0.62), (-0.12, 0.70), 0.55 * scale),
        ("nasal_bone", (0.10, 0.90), (-0.10, 0.99), 0.35 * scale),
        ("nasal_skin", (0.16, 1.03), (-0.12, 1.12), 0.25 * scale),
    )
    for name, p0, p1, half_width in segments:
        sub[_segment_distance(u, v, to_fetal(*p0), to_fetal(*p1)) < half_width] = LABELS[name]
    tip = to_fetal(-0.16, 1.10)
    sub[np.hypot(u - tip[0], v - tip[1]) < 1.1 * scale] = LABELS["nasal_tip"]
    labels[index] = sub
