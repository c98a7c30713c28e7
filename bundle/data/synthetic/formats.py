"""Writers for the synthetic images: PNG, DICOM (with spacing and institution) and NIfTI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from bundle.utils.atomic import atomic_path, atomic_write_bytes
from PIL import Image

SUFFIXES = {"png": ".png", "dcm": ".dcm", "nii": ".nii"}


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG (deterministic bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    atomic_write_bytes(path, buffer.getvalue())


def write_dicom(path: Path, image: np.ndarray, pixel_spacing_mm: list[float], institution: str, uid_key: str) -> None:
    """Write an ultrasound DICOM file with PixelSpacing and an ultrasound region carrying the spacing.

    Args:
        path: output file.
        image: uint8 (H, W) grey or (H, W, 3) RGB.
        pixel_spacing_mm: [row, column] spacing.
        institution: written to InstitutionName (the site name).
        uid_key: text from which the UIDs are derived, so files are byte-identical across runs.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    us_image_storage = "1.2.840.10008.5.1.4.1.1.6.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = us_image_storage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_key, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = us_image_storage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_key, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_key, "series"])
    ds.Modality = "US"
    ds.PatientID = uid_key
    ds.InstitutionName = institution
    ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if image.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [f"{pixel_spacing_mm[0]:.6g}", f"{pixel_spacing_mm[1]:.6g}"]
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # centimetres
    region.PhysicalDeltaX = pixel_spacing_mm[1] / 10.0
    region.PhysicalDeltaY = pixel_spacing_mm[0] / 10.0
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = np.ascontiguousarray(image).tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def write_nifti(path: Path, image: np.ndarray, pixel_spacing_mm: list[float]) -> None:
    """Write a grey image as 2-D NIfTI; voxel axis 0 is x (column), so the array is transposed."""
    import nibabel as nib

    grey = image if image.ndim == 2 else np.rint(image @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    affine = np.diag([pixel_spacing_mm[1], pixel_spacing_mm[0], 1.0, 1.0])
    nifti = nib.Nifti1Image(np.ascontiguousarray(grey.T), affine)
    nifti.header.set_zooms((pixel_spacing_mm[1], pixel_spacing_mm[0]))
    with atomic_path(path) as tmp:
        nib.save(nifti, str(tmp))
