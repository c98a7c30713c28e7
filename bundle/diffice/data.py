"""Diff-ICE data: datalist items with the plane label, structure classes and a resized canvas.

Every synthetic image carries ``meta.standard_plane`` and, when written with ``masks``, a tissue
label map. The guide's segmentation net learns :data:`STRUCTURE_CLASSES` (label-map values grouped
into the structures a sonographer checks); real datalists need the same ``label`` maps and
``meta.standard_plane`` flags (see ``docs/diffice.md``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from bundle.data.readers import ImageReadError, image_format, open_pil
from bundle.data.synthetic.anatomy import LABELS
from bundle.data.transforms import LoadUltrasoundImaged
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Lambdad,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    Resized,
    ResizeWithPadOrCropd,
    SelectItemsd,
)

__all__ = [
    "STRUCTURE_CLASSES",
    "diffice_items",
    "LoadLabelMapd",
    "StructureClassesd",
    "diffice_preprocessing",
    "training_augmentation",
    "diffice_datasets",
    "diffice_loaders",
]

#: segmentation classes of the guide: name -> tissue labels of the synthetic label map
STRUCTURE_CLASSES: dict[str, tuple[int, ...]] = {
    "background": (),
    "head": tuple(LABELS[n] for n in ("skull", "brain", "thalami", "midbrain", "fourth_ventricle", "cisterna_magna")),
    "NT": (LABELS["nt"],),
    "nasal": tuple(LABELS[n] for n in ("nasal_bone", "nasal_skin", "nasal_tip")),
    "palate": (LABELS["palate"],),
}

SP, NSP = 1, 0  # class indices: standard plane, non-standard plane


def diffice_items(entries: Sequence[dict]) -> list[dict]:
    """Datalist entries -> items with ``image``, ``label``, ``plane`` (1 = SP) and ``site``.

    Args:
        entries: validated datalist entries (absolute paths).

    Returns:
        the items.

    Raises:
        ValueError: naming the first entry without a label map or a standard-plane flag.
    """
    items = []
    for i, entry in enumerate(entries):
        flag = (entry.get("meta") or {}).get("standard_plane")
        if "label" not in entry or flag is None:
            missing = "label" if "label" not in entry else "meta.standard_plane"
            raise ValueError(
                f"datalist entry {i} ({entry.get('image')}): no {missing!r}; Diff-ICE needs a structure label map "
                "and the standard-plane flag per image (synthetic data: write it with masks, "
                "python -m bundle synth --masks)"
            )
        items.append(
            {
                "image": entry["image"],
                "label": entry["label"],
                "plane": SP if flag else NSP,
                "site": int(entry.get("site", 0)),
                "case_id": entry.get("case_id", str(i)),
                "reason": "standard" if flag else str((entry.get("meta") or {}).get("nonstandard_reason") or "unknown"),
            }
        )
    return items


def read_label_map(path: str) -> np.ndarray:
    """Read an integer label map (PNG/TIFF, NIfTI or DICOM) as (H, W) int64, values unchanged.

    Raises:
        ImageReadError: naming the file, the reason and the fix.
    """
    try:
        kind = image_format(path)
        if kind == "nifti":
            import nibabel

            array = np.asarray(nibabel.load(path).dataobj).squeeze().T
        elif kind == "dicom":
            import pydicom

            array = pydicom.dcmread(path).pixel_array
        else:
            with open_pil(path) as image:
                array = np.asarray(image)
    except ImageReadError:
        raise
    except Exception as error:  # noqa: BLE001 - every reader failure becomes one clear message
        raise ImageReadError(f"{path}: not a readable label map ({error}); write it as an 8-bit PNG") from None
    if array.ndim != 2:
        raise ImageReadError(f"{path}: label map has shape {array.shape}; write one 2-D integer map per image")
    return np.rint(array).astype(np.int64)


class LoadLabelMapd(MapTransform):
    """Load integer label maps (PNG, DICOM, NIfTI) as (1, H, W) int64 tensors, values kept.

    Args:
        keys: keys holding label-map paths.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Load every key; see the class docstring."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = MetaTensor(torch.as_tensor(read_label_map(str(d[key])))[None])
        return d


class StructureClassesd(MapTransform):
    """Map tissue label values to structure classes (:data:`STRUCTURE_CLASSES` order).

    Args:
        keys: label keys.
        classes: name -> tissue labels; class 0 is everything not listed.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        classes: Mapping[str, Sequence[int]] = STRUCTURE_CLASSES,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        table = torch.zeros(256, dtype=torch.int64)
        for index, values in enumerate(classes.values()):
            table[list(values)] = index
        self.table = table

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Map every key; see the class docstring."""
        d = dict(data)
        for key in self.key_iterator(d):
            label = torch.as_tensor(d[key]).long().clamp(0, 255)
            d[key] = self.table[label]
        return d


def diffice_preprocessing(image_size: Sequence[int]) -> Compose:
    """Load, fit the longest side into ``image_size`` (H, W) keeping the aspect, pad/crop to it.

    Args:
        image_size: (H, W) of the canvas.

    Returns:
        the deterministic chain: ``image`` float [0, 1] (1, H, W), ``label`` structure classes.
    """
    height, width = (int(v) for v in image_size)
    return Compose(
        [
            LoadUltrasoundImaged(keys="image", spacing_key=None),
            LoadLabelMapd(keys="label"),
            Resized(keys="image", spatial_size=max(height, width), size_mode="longest", mode="area"),
            Resized(keys="label", spatial_size=max(height, width), size_mode="longest", mode="nearest"),
            ResizeWithPadOrCropd(keys=["image", "label"], spatial_size=(height, width)),
            StructureClassesd(keys="label"),
            SelectItemsd(keys=["image", "label", "plane", "site", "case_id", "reason"]),
        ]
    )


def clip_unit(image: torch.Tensor) -> torch.Tensor:
    """Clamp grey levels to [0, 1] (after a random gain)."""
    return image.clamp(0.0, 1.0)


def training_augmentation(
    preprocessing: Compose, shift_px: float = 3.0, intensity: bool = True, keys: Sequence[str] = ("image",)
) -> Compose:
    """``preprocessing`` then random flips, small shifts and intensity jitter (the guide's and oracle's training).

    A left-right flip is a valid image (the head lies on either side); shifts of a few pixels and
    gain/gamma changes keep a classifier from reading the plane off position or brightness.

    Args:
        preprocessing: the deterministic chain (cached by ``CacheDataset`` up to the first random step).
        shift_px: largest shift in pixels (0: none).
        intensity: random gain (x 0.8-1.2) and gamma (0.8-1.25) on ``image``.
        keys: keys that are flipped and shifted (add ``label`` to move a label map with its image).

    Returns:
        the chain.
    """
    keys = list(keys)
    modes = ["nearest" if key == "label" else "bilinear" for key in keys]
    steps = [RandFlipd(keys=keys, prob=0.5, spatial_axis=1)]
    if shift_px:
        steps.append(
            RandAffined(keys=keys, prob=0.5, translate_range=(shift_px, shift_px), mode=modes, padding_mode="zeros")
        )
    if intensity:
        steps += [
            RandScaleIntensityd(keys="image", factors=0.2, prob=0.5),
            RandAdjustContrastd(keys="image", gamma=(0.8, 1.25), prob=0.5),
            Lambdad(keys="image", func=clip_unit),
        ]
    return Compose([*preprocessing.transforms, *steps])


class LazyMapping(Mapping):
    """A mapping whose values are built on first access, in the order the steps ask for them.

    A MONAI ``DataLoader`` draws its augmentation seed from the global torch generator when it is
    made, so making every loader up front would change each step's random stream; lazily, each is
    made when its step starts, and a run is reproducible step by step.

    Args:
        factories: name -> callable returning the value.
    """

    def __init__(self, factories: Mapping[str, object]) -> None:
        self._factories = dict(factories)
        self._made: dict[str, object] = {}

    def __getitem__(self, name: str) -> object:
        if name not in self._made:
            self._made[name] = self._factories[name]()
        return self._made[name]

    def __iter__(self):
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)


def diffice_datasets(
    split: Mapping[str, list],
    preprocessing: Compose,
    shift_px: Mapping[str, float],
    cache_workers: int = 0,
    progress: bool = False,
) -> LazyMapping:
    """The cached datasets of every Diff-ICE step (parts of :func:`~bundle.diffice.training.split_items`), made lazily.

    Args:
        split: the split parts.
        preprocessing: the deterministic chain.
        shift_px: largest training shift of the ``guide`` and the ``oracle``.
        cache_workers: workers that fill the caches.
        progress: show the caching progress.

    Returns:
        ``train`` (flips with their label maps: segmentation, DDPM), ``guide`` / ``oracle`` (flips,
        shifts, intensity jitter), ``guide_val`` / ``oracle_val`` / ``test`` (no augmentation),
        ``features`` / ``evaluator`` (each half whole: the proximity and the FID networks).
    """
    from monai.data import CacheDataset

    def cached(items: list, transform: Compose):
        return lambda: CacheDataset(items, transform, num_workers=cache_workers, progress=progress)

    return LazyMapping(
        {
            "train": cached(split["train"], training_augmentation(preprocessing, 0, False, ("image", "label"))),
            "guide": cached(split["guide_train"], training_augmentation(preprocessing, shift_px["guide"])),
            "oracle": cached(split["oracle_train"], training_augmentation(preprocessing, shift_px["oracle"])),
            "guide_val": cached(split["guide_val"], preprocessing),
            "oracle_val": cached(split["oracle_val"], preprocessing),
            "test": cached(split["test"], preprocessing),
            "features": cached(split["guide_train"] + split["guide_val"], preprocessing),
            "evaluator": cached(split["oracle_train"] + split["oracle_val"], preprocessing),
        }
    )


def diffice_loaders(datasets: Mapping[str, object], batch_size: int, ddpm_batch_size: int) -> LazyMapping:
    """A ``DataLoader`` per dataset of :func:`diffice_datasets` (training ones shuffled), plus ``ddpm`` on ``train``."""
    from monai.data import DataLoader

    shuffled = {"train", "guide", "oracle", "features", "evaluator"}

    def loader(name: str, size: int, shuffle: bool):
        return lambda: DataLoader(datasets[name], batch_size=int(size), shuffle=shuffle)

    factories = {name: loader(name, batch_size, name in shuffled) for name in datasets}
    factories["ddpm"] = loader("train", ddpm_batch_size, True)
    return LazyMapping(factories)
