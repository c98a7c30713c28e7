"""Probe geometry and the placement of the fetus in the maternal environment (SPEC 1.3, step 1).

The probe frame has ``x`` lateral and ``z`` depth in millimetres, with the virtual apex of the
sector at the origin; a curvilinear probe of radius ``apex_radius_mm`` images the annulus sector
``apex_radius_mm <= r <= apex_radius_mm + depth_mm``, ``|theta| <= sector_angle / 2``. A large
apex radius with a narrow angle gives the trapezoid look of some scanners.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bundle.data.synthetic.anatomy import LABELS, Ellipse, FetalAnatomy, fetal_labels


@dataclass(frozen=True)
class ProbeGeometry:
    """Sector of a curvilinear probe.

    Args:
        apex_radius_mm: distance from the virtual apex to the transducer face.
        depth_mm: imaging depth below the transducer face.
        sector_angle_rad: full opening angle of the sector.
    """

    apex_radius_mm: float
    depth_mm: float
    sector_angle_rad: float

    @property
    def max_radius_mm(self) -> float:
        """Radius of the deepest arc."""
        return self.apex_radius_mm + self.depth_mm

    def bounds(self) -> tuple[float, float, float, float]:
        """Return ``(x_min, x_max, z_min, z_max)`` of the sector in mm."""
        half = 0.5 * self.sector_angle_rad
        x_extent = self.max_radius_mm * np.sin(half)
        return -x_extent, x_extent, self.apex_radius_mm * np.cos(half), self.max_radius_mm

    def to_polar(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return radius (mm) and angle (rad, 0 straight down) of probe-frame points."""
        return np.hypot(x, z), np.arctan2(x, z)

    def contains(self, x: np.ndarray, z: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """Whether points lie inside the sector, at least ``margin_mm`` from its edges."""
        r, theta = self.to_polar(np.asarray(x, float), np.asarray(z, float))
        half = 0.5 * self.sector_angle_rad
        lateral = r * np.sin(half - np.abs(theta))
        return (
            (r >= self.apex_radius_mm + margin_mm)
            & (r <= self.max_radius_mm - margin_mm)
            & (np.abs(theta) <= half)
            & (lateral >= margin_mm)
        )


@dataclass(frozen=True)
class Scene:
    """A fetus placed in the probe frame with its surroundings.

    Args:
        anatomy: the fetus in its own frame.
        probe: the probe geometry.
        origin: probe-frame position of the fetal-frame origin (mm).
        tilt_rad: rotation of the fetal long axis from horizontal.
        facing: +1 when the crown points to +x (right of the image), -1 when to the left.
        sac: chorionic sac ellipse in the fetal frame.
        placenta_side: +1 placenta on the anterior wall (near the probe), -1 posterior.
        maternal_wall_mm: thickness of the maternal abdominal wall under the probe.
    """

    anatomy: FetalAnatomy
    probe: ProbeGeometry
    origin: tuple[float, float]
    tilt_rad: float
    facing: int
    sac: Ellipse
    placenta_side: int
    maternal_wall_mm: float

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Probe-frame unit vectors of the fetal ``u`` (crown) and ``v`` (anterior) axes.

        The anterior axis points up (towards the probe) when the fetus is horizontal, so the NT
        lies under the neck with the amniotic fluid below it.
        """
        c, s = np.cos(self.tilt_rad), np.sin(self.tilt_rad)
        return np.array([self.facing * c, s]), np.array([self.facing * s, -c])

    def to_fetal(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map probe-frame points to the fetal frame."""
        e_u, e_v = self.axes
        dx, dz = x - self.origin[0], z - self.origin[1]
        return dx * e_u[0] + dz * e_u[1], dx * e_v[0] + dz * e_v[1]

    def to_probe(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map fetal-frame points to the probe frame."""
        e_u, e_v = self.axes
        return (self.origin[0] + u * e_u[0] + v * e_v[0], self.origin[1] + u * e_u[1] + v * e_v[1])

    def labels(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the tissue label (``LABELS``) at each probe-frame point."""
        labels = np.full(x.shape, LABELS["myometrium"], dtype=np.uint8)
        u, v = self.to_fetal(x, z)
        sac_r = self.sac.radius(u, v)
        _, sac_q = self.sac.local(u, v)
        placenta = (sac_r >= 1.0) & (sac_r < 1.0 + 14.0 / min(self.sac.axes)) & (self.placenta_side * sac_q > 0.2)
        labels[placenta] = LABELS["placenta"]
        labels[sac_r < 1.0] = LABELS["chorionic_fluid"]
        fetal_labels(self.anatomy, u, v, labels)
        wall = np.hypot(x, z) < self.probe.apex_radius_mm + self.maternal_wall_mm
        labels[wall] = LABELS["maternal_wall"]
        return labels


def place_fetus(
    rng: np.random.Generator,
    anatomy: FetalAnatomy,
    probe: ProbeGeometry,
    tilt_range_rad: tuple[float, float] = (0.0, 0.17),
    max_tries: int = 50,
) -> Scene:
    """Place the fetus so that its whole NT region lies inside the sector.

    Args:
        rng: random generator.
        anatomy: the fetus.
        probe: the probe geometry.
        tilt_range_rad: range of the absolute tilt of the long axis; the sign is random.
        max_tries: placements tried before giving up.

    Returns:
        the scene.

    Raises:
        RuntimeError: when no placement keeps the NT region 2 mm inside the sector.
    """
    crl = anatomy.crl_mm
    outline = anatomy.nt_outline()
    for _ in range(max_tries):
        tilt = float(rng.uniform(*tilt_range_rad)) * (1 if rng.random() < 0.5 else -1)
        facing = 1 if rng.random() < 0.5 else -1
        gap = rng.uniform(5.0, 12.0, size=2)
        sac = Ellipse(anatomy.amnion.center, tuple(np.add(anatomy.amnion.axes, gap)), anatomy.amnion.angle)
        # Put the trunk-head centre near the middle of the sector, then shift by the offset of
        # the fetal-frame origin from that centre.
        target = (
            rng.uniform(-0.08, 0.08) * probe.depth_mm,
            probe.apex_radius_mm + probe.depth_mm * rng.uniform(0.45, 0.56),
        )
        scene = Scene(
            anatomy, probe, (0.0, 0.0), tilt, facing, sac, 1 if rng.random() < 0.5 else -1, float(rng.uniform(6, 13))
        )
        cx, cz = scene.to_probe(np.array(-0.1 * crl), np.array(0.0))
        origin = (float(target[0] - cx), float(target[1] - cz))
        scene = Scene(anatomy, probe, origin, tilt, facing, sac, scene.placenta_side, scene.maternal_wall_mm)
        ox, oz = scene.to_probe(outline[:, 0], outline[:, 1])
        inside = probe.contains(ox, oz, margin_mm=2.0)
        clear_of_wall = np.hypot(ox, oz) > probe.apex_radius_mm + scene.maternal_wall_mm + 2.0
        if inside.all() and clear_of_wall.all():
            return scene
    raise RuntimeError("could not place the NT region inside the sector; increase the depth or the sector angle")
