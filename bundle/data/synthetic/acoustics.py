"""Convolution model of B-mode formation (SPEC 1.3, step 2).

Scatterers are complex Gaussian with a per-tissue amplitude (fully developed, Rayleigh speckle;
some tissues get a gamma-distributed texture), convolved with a separable Gaussian point-spread
function on the polar (radius x angle) grid, enveloped, corrected by an imperfect time-gain
compensation, log-compressed to the dynamic range and finally scan-converted onto the Cartesian
image. A physics simulator would take minutes per image; this takes milliseconds.
"""

from __future__ import annotations

import numpy as np
from bundle.data.synthetic.anatomy import LABELS
from scipy import ndimage

SPEED_OF_SOUND_MM_PER_US = 1.54

# Mean scatterer amplitude per tissue in dB (0 dB renders white at zero gain).
ECHO_LEVEL_DB: dict[str, float] = {
    "background": -90.0,
    "maternal_wall": -20.0,
    "myometrium": -27.0,
    "placenta": -21.0,
    "chorionic_fluid": -46.0,
    "amniotic_fluid": -60.0,
    "amnion": -22.0,
    "soft_tissue": -27.0,
    "skin": -14.0,
    "nt": -60.0,
    "nuchal_tissue": -12.0,
    "spine": -10.0,
    "skull": -5.0,
    "brain": -43.0,
    "thalami": -30.0,
    "midbrain": -37.0,
    "fourth_ventricle": -58.0,
    "cisterna_magna": -58.0,
    "nasal_bone": -6.0,
    "nasal_skin": -11.0,
    "nasal_tip": -20.0,
    "palate": -9.0,
}

# Tissues with a gamma texture on top of the speckle (shape parameter; lower is coarser).
TEXTURE_SHAPE: dict[str, float] = {"maternal_wall": 1.5, "myometrium": 3.0, "placenta": 2.0}

NOISE_FLOOR_DB = -64.0


def amplitude_lookup() -> tuple[np.ndarray, np.ndarray]:
    """Return per-label amplitude and texture-shape tables indexed by label value."""
    size = max(LABELS.values()) + 1
    amplitude = np.zeros(size, dtype=np.float32)
    shape = np.zeros(size, dtype=np.float32)
    for name, label in LABELS.items():
        amplitude[label] = 10.0 ** (ECHO_LEVEL_DB[name] / 20.0)
        shape[label] = TEXTURE_SHAPE.get(name, 0.0)
    return amplitude, shape


_AMPLITUDE, _TEXTURE_SHAPE = amplitude_lookup()


def psf_sigmas_mm(frequency_mhz: float, lateral_factor: float = 1.0) -> tuple[float, float]:
    """Return the axial and lateral standard deviations (mm) of the Gaussian point-spread function.

    The axial size follows the pulse length (about two wavelengths), the lateral size the beam
    width at an f-number near 2, both proportional to the wavelength ``c / f``.

    Args:
        frequency_mhz: probe centre frequency.
        lateral_factor: scales the lateral width (focusing quality of the scanner).

    Returns:
        (axial_sigma_mm, lateral_sigma_mm).
    """
    wavelength = SPEED_OF_SOUND_MM_PER_US / frequency_mhz
    return 0.45 * wavelength, 1.5 * wavelength * lateral_factor


def _unit_energy_kernel(sigma: float) -> np.ndarray:
    """Gaussian kernel scaled to unit L2 norm, so filtering white noise keeps its power."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / np.sqrt(np.sum(kernel**2))).astype(np.float32)


def speckle_envelope(
    labels: np.ndarray,
    sigma_samples: tuple[float, float],
    rng: np.random.Generator,
    noise_floor_db: float = NOISE_FLOOR_DB,
) -> np.ndarray:
    """Simulate the pre-log envelope of a label map on the polar grid.

    Args:
        labels: (radius, angle) tissue labels.
        sigma_samples: PSF standard deviations in samples along (radius, angle); values below 0.3
            leave that axis unfiltered (the PSF is finer than the grid).
        rng: random generator.
        noise_floor_db: level of additive electronic noise.

    Returns:
        float32 envelope of the same shape; in a homogeneous region without texture it is Rayleigh
        distributed (mean / standard deviation = 1.91).
    """
    amplitude = _AMPLITUDE[labels]
    shape = _TEXTURE_SHAPE[labels]
    textured = shape > 0
    if textured.any():
        k = shape[textured]
        amplitude[textured] *= np.sqrt(rng.gamma(k, 1.0 / k)).astype(np.float32)
    noise = rng.standard_normal((2, *labels.shape), dtype=np.float32)
    real = amplitude * noise[0]
    imag = amplitude * noise[1]
    for axis, sigma in enumerate(sigma_samples):
        if sigma >= 0.3:
            kernel = _unit_energy_kernel(sigma)
            real = ndimage.convolve1d(real, kernel, axis=axis, mode="reflect")
            imag = ndimage.convolve1d(imag, kernel, axis=axis, mode="reflect")
    floor = np.float32(10.0 ** (noise_floor_db / 20.0))
    electronic = rng.standard_normal((2, *labels.shape), dtype=np.float32)
    real += floor * electronic[0]
    imag += floor * electronic[1]
    return np.sqrt((real * real + imag * imag) * 0.5)


def log_compress(envelope: np.ndarray, gain_db: np.ndarray | float, dynamic_range_db: float) -> np.ndarray:
    """Map an envelope to 8-bit-range grey levels.

    Args:
        envelope: linear envelope (1.0 renders white at zero gain).
        gain_db: gain, a scalar or an array broadcastable to ``envelope`` (depth-dependent TGC).
        dynamic_range_db: displayed dynamic range.

    Returns:
        float32 grey levels in [0, 255].
    """
    level_db = 20.0 * np.log10(np.maximum(envelope, 1e-9)) + gain_db
    return np.clip(255.0 * (1.0 + level_db / dynamic_range_db), 0.0, 255.0).astype(np.float32)


def tgc_error_db(rng: np.random.Generator, n_depth: int, max_error_db: float) -> np.ndarray:
    """Draw a smooth depth-dependent gain error left after time-gain compensation.

    Args:
        rng: random generator.
        n_depth: number of depth samples.
        max_error_db: largest absolute error.

    Returns:
        float32 array of shape (n_depth, 1).
    """
    t = np.linspace(0.0, 1.0, n_depth)
    slope = rng.uniform(-1.0, 1.0)
    bump = rng.uniform(-1.0, 1.0) * np.sin(np.pi * t)
    curve = 0.5 * slope * (2 * t - 1) + 0.5 * bump
    return (max_error_db * curve).astype(np.float32)[:, None]


def scan_convert(
    polar: np.ndarray, radius_index: np.ndarray, angle_index: np.ndarray, inside: np.ndarray, order: int
) -> np.ndarray:
    """Resample a polar image onto Cartesian pixels.

    Args:
        polar: (radius, angle) image.
        radius_index: fractional radius index of each output pixel.
        angle_index: fractional angle index of each output pixel.
        inside: whether each output pixel lies in the sector.
        order: 1 for grey levels (bilinear), 0 for labels (nearest).

    Returns:
        the Cartesian image, 0 outside the sector.
    """
    coords = np.stack([radius_index[inside], angle_index[inside]])
    out = np.zeros(inside.shape, dtype=polar.dtype)
    out[inside] = ndimage.map_coordinates(polar, coords, order=order, mode="nearest", prefilter=False)
    return out
