"""Random state of a training run: capture it for a checkpoint, restore it, re-seed it.

A resumed run continues bit for bit only if every random stream continues where it stopped: the
global generators of torch (CPU and CUDA), NumPy and Python, and the private NumPy generator of
every MONAI randomizable transform (the augmentation), which MONAI's ``DataLoader`` seeds once when
it is built. :func:`capture_random_state` turns all of them into tensors and plain numbers that
``torch.load(..., weights_only=True)`` reads back; :func:`restore_random_state` puts them back.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from monai.data.utils import set_rnd
from monai.transforms import Randomizable, Transform
from monai.utils import set_determinism


def _walk_transforms(obj, seen: set[int]) -> Iterator[Randomizable]:
    """Randomizable transforms reachable from ``obj`` (a dataset, Compose, transform or list), in a fixed order."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _walk_transforms(item, seen)
        return
    if isinstance(obj, torch.utils.data.Dataset):
        yield from _walk_transforms(getattr(obj, "transform", None), seen)
        return
    if not isinstance(obj, Transform):
        return
    if isinstance(obj, Randomizable):
        yield obj
    for value in vars(obj).values():
        if isinstance(value, (list, tuple, Transform)):
            yield from _walk_transforms(value, seen)


def transform_generators(sources: Iterable) -> list[np.random.RandomState]:
    """The distinct NumPy generators of the randomizable transforms of ``sources``, in a fixed order.

    Args:
        sources: datasets (their ``transform`` is searched), Compose objects or transforms.

    Returns:
        one ``RandomState`` per distinct generator (transforms never seeded share MONAI's class default).
    """
    generators, ids, seen = [], set(), set()
    for transform in _walk_transforms(list(sources), seen):
        if id(transform.R) not in ids:
            ids.add(id(transform.R))
            generators.append(transform.R)
    return generators


def _numpy_state(state: tuple) -> dict:
    """A NumPy ``get_state()`` tuple as tensors and numbers."""
    _, keys, pos, has_gauss, gauss = state
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def _numpy_tuple(state: dict) -> tuple:
    """The inverse of :func:`_numpy_state`."""
    return ("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"])


def capture_random_state(sources: Iterable = ()) -> dict:
    """Every random stream of the process and of the transforms of ``sources``.

    Args:
        sources: datasets or transforms whose augmentation generators are included.

    Returns:
        a dict of tensors, numbers and lists that ``torch.save`` writes and ``weights_only`` loads.
    """
    version, python_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state()),
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "transforms": [_numpy_state(generator.get_state()) for generator in transform_generators(sources)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict, sources: Iterable = ()) -> None:
    """Put back what :func:`capture_random_state` captured.

    Args:
        state: the captured state.
        sources: the same datasets or transforms (same config) as at capture time.

    Raises:
        ValueError: when ``sources`` hold another number of transform generators than the checkpoint.
    """
    generators = transform_generators(sources)
    if len(generators) != len(state["transforms"]):
        raise ValueError(
            f"the checkpoint holds {len(state['transforms'])} augmentation random state(s) but this config has "
            f"{len(generators)}: resume with the config the run started with, or start a new --output_dir"
        )
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_tuple(state["numpy"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    for generator, saved in zip(generators, state["transforms"], strict=True):
        generator.set_state(_numpy_tuple(saved))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def reseed(seed: int, sources: Iterable = ()) -> None:
    """Seed every random stream from ``seed``: the global generators and each transform of ``sources``.

    Args:
        seed: the seed.
        sources: datasets or transforms whose augmentation generators are re-seeded.
    """
    set_determinism(seed=seed)
    for source in sources:
        set_rnd(getattr(source, "transform", source), seed)


class RandomStreams:
    """Every random stream of the process and of the augmentation transforms, as a checkpointable object.

    What ignite's ``Checkpoint`` does not hold by itself: ``state_dict`` is
    :func:`bundle.utils.rng.capture_random_state` (torch, NumPy, Python, CUDA and each transform
    generator of ``sources``), ``load_state_dict`` puts it back.

    Args:
        sources: datasets or transforms whose augmentation generators are included.
    """

    def __init__(self, sources: list | tuple = ()) -> None:
        self.sources = list(sources)

    def state_dict(self) -> dict:
        """The captured streams."""
        return capture_random_state(self.sources)

    def load_state_dict(self, state: dict) -> None:
        """Restore the streams (the same transforms as at capture time)."""
        restore_random_state(state, self.sources)
