"""Image readers for PNG/JPG/BMP, DICOM and NIfTI ultrasound frames (SPEC 1.2).

Every reader returns one luminance channel as float32 in [0, 1], shaped (H, W) with rows = y and
columns = x, so ``roi = [x0, y0, x1, y1]`` indexes ``image[y0:y1, x0:x1]``. (MONAI's PIL reader
returns (W, H); these readers do not.) DICOM is read with pydicom directly because the generic
readers return palette indices for PALETTE COLOR images, ignore the ultrasound-region spacing and
mishandle multi-frame files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601, as DICOM's YBR
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: the only Pillow decoders ever run: a file's content is matched against these before any decoder
#: starts, so an EPS (Ghostscript), PDF, SVG or any other format named ``scan.png`` is refused unread
PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


#: default for the most pixels (rows x columns x frames) an image may claim; larger ones are refused
#: from their header, before decoding (a decompression bomb). 4096 x 4096 covers every ultrasound frame.
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_PIXELS_ENV = "FETAL_NT_MAX_PIXELS"


class ImageReadError(ValueError):
    """An image file that cannot be read, with the file, the reason and the fix in the message."""


def max_pixels() -> int:
    """The pixel limit: ``$FETAL_NT_MAX_PIXELS`` when set (also in worker processes), else the default."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} is not a whole number of pixels; e.g. 16777216") from None


def set_max_pixels(limit: int | None) -> int:
    """Set the pixel limit for this process and the processes it starts (configs: ``max_image_pixels``).

    Args:
        limit: the most pixels an image may claim; None keeps the current limit.

    Returns:
        the limit in force.
    """
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"max_image_pixels must be positive, got {limit}")
        os.environ[MAX_PIXELS_ENV] = str(int(limit))
    return max_pixels()


def check_pixel_count(path: str | os.PathLike, shape: tuple[int, ...], what: str = "image") -> None:
    """Refuse a header that claims more pixels than :func:`max_pixels`, before anything is decoded.

    Args:
        path: the file (named in the message).
        shape: the dimensions the header claims.
        what: how to name them in the message.

    Raises:
        ImageReadError: naming the file, the claimed size, the limit and the fix.
    """
    count, limit = int(np.prod([max(int(d), 0) for d in shape], dtype=np.float64)), max_pixels()
    if count > limit:
        dims = " x ".join(str(int(d)) for d in shape)
        raise ImageReadError(
            f"{path}: the header claims a {dims} {what} ({count:,} pixels), over the limit of {limit:,} "
            f"(a decompression bomb or a wrong header); resize or re-export it, or raise the limit with "
            f"max_image_pixels / {MAX_PIXELS_ENV}"
        )


@dataclass
class LoadedImage:
    """A decoded image.

    Args:
        array: float32 (H, W) luminance in [0, 1].
        pixel_spacing_mm: (row, column) spacing from the file, or None when the file has none.
        format: ``pil``, ``dicom`` or ``nifti``.
    """

    array: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    format: str


def image_format(path: str | os.PathLike) -> str:
    """Return the reader for ``path`` from its suffix, or from the DICOM preamble when it has none.

    Args:
        path: image file.

    Returns:
        ``pil``, ``dicom`` or ``nifti``.

    Raises:
        ImageReadError: for an unsupported suffix.
    """
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    try:
        if _has_dicom_preamble(path):
            return "dicom"
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open ({error.strerror}); check the path and permissions") from None
    raise ImageReadError(f"{path}: unsupported image type; use PNG/JPG/BMP, DICOM (.dcm) or NIfTI (.nii, .nii.gz)")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Reduce (..., 3) colour to luminance with the BT.601 weights."""
    return rgb[..., :3].astype(np.float64) @ LUMA_WEIGHTS


def _check_finite(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Reject NaN or infinite pixels: they would silently poison every metric downstream."""
    bad = ~np.isfinite(array)
    if bad.any():
        raise ImageReadError(
            f"{path}: {int(bad.sum())} pixel(s) are NaN or infinite; re-export the image with finite values"
        )
    return array


def open_pil(path: str | os.PathLike, lift_pixel_limit: bool = False):
    """``PIL.Image.open`` (header only) restricted to :data:`PIL_FORMATS`, whatever the file's name.

    Pillow picks a decoder from the content; for EPS it runs Ghostscript on the file. Only the
    documented formats' plugins are tried, so any other content is refused before a decoder runs.

    Args:
        path: image file.
        lift_pixel_limit: lift PIL's own pixel limit for this call alone (the bundle's limit,
            :func:`check_pixel_count`, applies instead; PIL's is put back at once).

    Returns:
        the opened (not yet decoded) image.

    Raises:
        ImageReadError: for content that is not PNG, JPEG, BMP or TIFF.
    """
    from PIL import Image, UnidentifiedImageError

    previous = Image.MAX_IMAGE_PIXELS
    if lift_pixel_limit:
        Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path, formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{path}: the content is not a PNG, JPEG, BMP or TIFF image (whatever its name says); "
            "re-export it as PNG (other formats, e.g. EPS or PDF, are never decoded)"
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def read_pil(path: str | os.PathLike) -> LoadedImage:
    """Read PNG/JPG/BMP/TIFF with Pillow; colour, palette and alpha exports become luminance.

    Args:
        path: image file.

    Returns:
        the decoded image; 16-bit grey is scaled by 65535, 8-bit by 255.
    """
    from PIL import UnidentifiedImageError

    try:
        with open_pil(path, lift_pixel_limit=True) as image:
            check_pixel_count(path, (image.size[1], image.size[0]))  # only the first frame is decoded
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
                # 16-bit grey keeps its scale; signed or wider integers are stretched to [0, 1]
                array = array / 65535.0 if low >= 0 and high <= 65535 else (array - low) / max(high - low, 1.0)
            elif mode == "F":
                array = np.asarray(image, dtype=np.float64)
                _check_finite(array, path)
                low, high = float(array.min()), float(array.max())
                array = array if low >= 0 and high <= 1 else (array - low) / max(high - low, 1e-12)
            elif mode == "L":
                array = np.asarray(image, dtype=np.float64) / 255.0
            elif mode == "1":
                array = np.asarray(image, dtype=np.float64)
            else:
                array = luminance(np.asarray(image.convert("RGB"))) / 255.0
    except FileNotFoundError:
        raise ImageReadError(
            f"{path}: file not found; check the path (relative paths start at the datalist's folder)"
        ) from None
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: not a readable image ({error}); re-export it as PNG") from None
    return LoadedImage(_check_finite(array, path).astype(np.float32), None, "pil")


def _spacing_pair(ds, keyword: str, path: str | os.PathLike) -> tuple[float, float] | None:
    """``ds.<keyword>`` as two positive floats (row, column), None when absent or not positive.

    Raises:
        ImageReadError: when the element holds something other than two numbers (one value, text).
    """
    if keyword not in ds:
        return None
    try:
        value = ds[keyword].value
    except Exception:  # noqa: BLE001 - pydicom converts values lazily and raises several types
        value = ds[keyword].repval if hasattr(ds[keyword], "repval") else "?"
        raise ImageReadError(
            f"{path}: DICOM {keyword} cannot be decoded ({value}); it must hold two numbers, row and column "
            "spacing in mm; fix the header, or delete the element to read the image without spacing"
        ) from None
    if value in (None, "", b""):
        return None
    if isinstance(value, bytes):  # an unknown VR keeps the raw bytes
        value = value.decode("ascii", "replace")
    items = value.split("\\") if isinstance(value, str) else list(value) if hasattr(value, "__iter__") else [value]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        values = []
    if len(values) < 2:
        raise ImageReadError(
            f"{path}: DICOM {keyword} is {value!r}; it must hold two numbers, row and column spacing in mm "
            f"(e.g. 0.1\\0.1); fix the header, or delete the element to read the image without spacing"
        )
    row, col = values[:2]
    return (row, col) if row > 0 and col > 0 else None


def _dicom_spacing(ds, path: str | os.PathLike = "") -> tuple[float, float] | None:
    """Pixel spacing (row, column) in mm from PixelSpacing or the ultrasound regions (cm)."""
    spacing = _spacing_pair(ds, "PixelSpacing", path)
    if spacing is not None:
        return spacing
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        units_x = region.get("PhysicalUnitsXDirection")
        units_y = region.get("PhysicalUnitsYDirection")
        if units_x == 3 and units_y == 3 and region.get("PhysicalDeltaX") and region.get("PhysicalDeltaY"):
            return abs(float(region.PhysicalDeltaY)) * 10.0, abs(float(region.PhysicalDeltaX)) * 10.0
    return _spacing_pair(ds, "ImagerPixelSpacing", path)


DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"


def photometric_of(ds) -> str:
    """The dataset's PhotometricInterpretation, upper case (MONOCHROME2 when absent)."""
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()


def _has_dicom_preamble(path: str | os.PathLike) -> bool:
    """``DICM`` at byte 128; raises OSError when the file cannot be opened."""
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the DICOM preamble (``DICM`` at byte 128), whatever its name."""
    try:
        return _has_dicom_preamble(path)
    except OSError:
        return False


def _check_deflated_size(path: str | os.PathLike, chunk: int = 1 << 20) -> None:
    """Inflate a Deflated Explicit VR DICOM in chunks, refusing it once it outgrows the pixel limit.

    pydicom inflates the whole dataset in memory before any header can be checked; a few kB can
    claim gigabytes. Anything else returns at once.
    """
    import zlib

    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(path)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED_TRANSFER_SYNTAX:
        return
    budget = 4 * max_pixels() + (16 << 20)  # up to 32 bits per pixel, plus the non-pixel elements
    with open(path, "rb") as handle:
        handle.seek(128 + 4 + 12 + int(meta.FileMetaInformationGroupLength))
        inflater, size = zlib.decompressobj(-zlib.MAX_WBITS), 0
        try:
            while block := handle.read(chunk):
                data = inflater.decompress(block, chunk)
                while data:
                    size += len(data)
                    if size > budget:
                        raise ImageReadError(
                            f"{path}: the deflated DICOM inflates to over {budget // 2**20} MB, more than an image "
                            f"of {max_pixels():,} pixels needs (a decompression bomb); re-export it uncompressed, "
                            f"or raise the limit with max_image_pixels / {MAX_PIXELS_ENV}"
                        )
                    data = inflater.decompress(inflater.unconsumed_tail, chunk)
        except zlib.error:
            return  # corrupt deflate data: pydicom reports it


def read_dicom(path: str | os.PathLike, frame: int | None = None) -> LoadedImage:
    """Read a DICOM ultrasound frame with pydicom.

    Palette images go through their lookup table, RGB becomes luminance, YBR keeps its Y channel,
    MONOCHROME1 is inverted. Spacing comes from PixelSpacing or the ultrasound regions. External
    references in the file are never followed.

    Args:
        path: DICOM file.
        frame: frame of a multi-frame file (0-based); required when the file has several frames.

    Returns:
        the decoded frame.

    Raises:
        ImageReadError: for files without pixel data, multi-frame files without a frame, an
            out-of-range frame, or undecodable data.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, pixel_array

    try:
        _check_deflated_size(path)
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found; check the path") from None
    except ImageReadError:
        raise
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise ImageReadError(
            f"{path}: not a readable DICOM file ({error}); re-export it from the scanner or PACS"
        ) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(
            f"{path}: DICOM file has no pixel data (a report or structured document?); export the image itself"
        )
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise ImageReadError(
            f"{path}: NumberOfFrames {ds.get('NumberOfFrames')!r} is not a whole number; fix the header "
            "or re-export the image from the scanner"
        ) from None
    if photometric_of(ds) == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" not in ds:
        raise ImageReadError(
            f"{path}: PALETTE COLOR DICOM without its lookup table (no RedPaletteColorLookupTableDescriptor); "
            "re-export it as MONOCHROME2 or RGB"
        )
    check_pixel_count(path, (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), n_frames), "DICOM image")
    if n_frames > 1 and frame is None:
        raise ImageReadError(
            f"{path}: multi-frame DICOM with {n_frames} frames; choose one with the reader's frame option "
            f"(0..{n_frames - 1}) or export a single frame"
        )
    if frame is not None and not 0 <= frame < n_frames:
        raise ImageReadError(f"{path}: frame {frame} requested but the file has {n_frames} frame(s)")
    try:
        raw = pixel_array(ds, index=frame if n_frames > 1 else None, raw=True)
    except Exception as error:  # pydicom raises many types for corrupt or unsupported data
        raise ImageReadError(f"{path}: DICOM pixel data cannot be decoded ({error}); re-export uncompressed") from None
    photometric = photometric_of(ds)
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(raw, ds)
            lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as error:  # a broken lookup table: pydicom raises several types
            raise ImageReadError(
                f"{path}: PALETTE COLOR lookup table cannot be applied ({error}); re-export as MONOCHROME2 or RGB"
            ) from None
        array = luminance(rgb) / (2.0**lut_bits - 1)
    elif photometric.startswith("YBR"):
        array = raw[..., 0].astype(np.float64) / (2.0**bits - 1)
    elif raw.ndim == 3 and raw.shape[-1] in (3, 4):
        array = luminance(raw) / (2.0**bits - 1)
    else:
        array = raw.astype(np.float64)
        if int(ds.get("PixelRepresentation", 0)) == 1:
            array = array + 2.0 ** (bits - 1)
        array = array / (2.0**bits - 1)
        if photometric == "MONOCHROME1":
            array = 1.0 - array
    if array.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D frame, got pixel array of shape {raw.shape}")
    spacing = _dicom_spacing(ds, path)
    return LoadedImage(_check_finite(np.clip(array, 0, 1), path).astype(np.float32), spacing, "dicom")


def read_nifti(path: str | os.PathLike) -> LoadedImage:
    """Read a 2-D NIfTI image (a trailing singleton dimension is allowed).

    Voxel axis 0 is x (column) and axis 1 is y (row), so the array is transposed to (H, W); no
    orientation flips are applied (a 2-D ultrasound frame has no patient orientation). Integer
    data is scaled by its type's maximum, float data in [0, 1] is kept, other float data is
    min-max scaled.

    Args:
        path: NIfTI file.

    Returns:
        the decoded image with spacing (row, column) from the header zooms.

    Raises:
        ImageReadError: for unreadable files or more than two non-singleton dimensions.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found; check the path") from None
    except Exception as error:  # nibabel raises several types for corrupt headers and data
        raise ImageReadError(f"{path}: not a readable NIfTI file ({error})") from None
    check_pixel_count(path, tuple(image.shape), "NIfTI image")
    try:
        data = np.asanyarray(image.dataobj)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found; check the path") from None
    except Exception as error:  # nibabel raises several types for corrupt headers and data
        raise ImageReadError(f"{path}: not a readable NIfTI file ({error})") from None
    if data.dtype.fields is not None or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ImageReadError(
            f"{path}: NIfTI voxels are of type {data.dtype} (RGB, complex or another non-scalar type); "
            "save one grey channel as a 2-D integer or float image"
        )
    shape = data.shape
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise ImageReadError(f"{path}: NIfTI image of shape {shape} is not 2-D; save one 2-D frame (X, Y) or (X, Y, 1)")
    zooms = image.header.get_zooms()
    spacing = (float(zooms[1]), float(zooms[0])) if zooms[0] > 0 and zooms[1] > 0 else None
    array = np.asarray(data).T
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        array = (array.astype(np.float64) - min(info.min, 0)) / (info.max - min(info.min, 0))
    else:
        array = _check_finite(array.astype(np.float64), path)
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            array = (array - low) / max(high - low, 1e-12)
    return LoadedImage(_check_finite(array, path).astype(np.float32), spacing, "nifti")


def read_image(path: str | os.PathLike, frame: int | None = None) -> LoadedImage:
    """Read any supported ultrasound image as float32 (H, W) luminance in [0, 1].

    Args:
        path: image file (PNG/JPG/BMP/TIFF, DICOM, NIfTI).
        frame: frame index for multi-frame DICOM.

    Returns:
        the decoded image.

    Raises:
        ImageReadError: with the file, the reason and the fix.
    """
    if not Path(path).exists():
        raise ImageReadError(f"{path}: file not found; check the path (relative paths start at the datalist's folder)")
    if Path(path).stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes); re-export or remove it from the datalist")
    kind = image_format(path)
    if kind == "dicom":
        return read_dicom(path, frame)
    if kind == "nifti":
        return read_nifti(path)
    return read_pil(path)
