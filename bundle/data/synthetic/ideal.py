"""The speckle-free ideal of a synthetic image: what a perfect reconstruction could draw.

An autoencoder cannot reproduce an image's own speckle (it is noise, not anatomy); the best it can
do under a squared error is the image's conditional mean given its anatomy and scanner settings.
For images of the synthetic generator that mean is computable: the same scene rendered with many
independent speckle draws and averaged (:func:`bundle.data.synthetic.generator.generate_case` with
``speckle_average``). ``python -m bundle zoom-floor DATALIST --ideal K`` measures the NT on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from bundle.data.readers import luminance
from bundle.data.synthetic.dataset import GENERATOR_VERSION
from bundle.data.synthetic.generator import generate_case


def ideal_image(entry: Mapping, generator: Mapping, realizations: int = 8) -> np.ndarray:
    """The speckle-free ideal of one synthetic datalist entry, as the readers return images.

    Args:
        entry: a datalist entry written by ``python -m bundle synth`` (``meta.synthetic`` holds its
            seed, site and index).
        generator: the datalist's ``generator`` block (version, size bound, options).
        realizations: speckle draws averaged.

    Returns:
        float32 (H, W) luminance in [0, 1], pixel for pixel on the entry's image.

    Raises:
        ValueError: for an entry or datalist the generator did not write, or another generator version.
    """
    name = entry.get("image", "?")
    origin = (entry.get("meta") or {}).get("synthetic")
    if not isinstance(origin, Mapping) or not {"seed", "site", "index"} <= origin.keys():
        raise ValueError(
            f"{name}: no meta.synthetic {{seed, site, index}}; the speckle-free ideal exists only for images "
            "written by `python -m bundle synth`"
        )
    if generator.get("version") != GENERATOR_VERSION:
        raise ValueError(
            f"{name}: written by generator version {generator.get('version')!r}, this is {GENERATOR_VERSION!r}; "
            "regenerate the dataset with this version to render its ideal"
        )
    size = generator.get("size")
    case = generate_case(
        int(origin["seed"]),
        int(origin["site"]),
        int(origin["index"]),
        tuple(size) if size else None,
        speckle_average=max(1, int(realizations)),
        **dict(generator.get("options") or {}),
    )
    grey = luminance(case.image) if case.image.ndim == 3 else case.image.astype(np.float64)
    return (grey / 255.0).astype(np.float32)


def ideal_reader(datalist: Mapping, realizations: int = 8) -> Callable[[Mapping], np.ndarray]:
    """A reader of entries' ideals for a synthetic datalist (``zoom_floor``'s ``ideal_reader``).

    Raises:
        ValueError: when the datalist has no ``generator`` block (it was not written by ``synth``).
    """
    generator = datalist.get("generator")
    if not isinstance(generator, Mapping):
        raise ValueError(
            "the datalist has no 'generator' block; the speckle-free ideal needs a datalist written by "
            "`python -m bundle synth`"
        )
    return lambda entry: ideal_image(entry, generator, realizations)
