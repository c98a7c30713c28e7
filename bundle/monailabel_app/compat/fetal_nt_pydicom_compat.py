"""Compatibility for MONAI Label 0.8.5 with pydicom 3: provide ``pydicom._storage_sopclass_uids``.

pydicom-seg 0.4.1 (a MONAI Label dependency) imports ``SegmentationStorage`` from that module, which
pydicom 3 removed (the UIDs now live in ``pydicom.uid``). The install script copies this file into
site-packages with a ``.pth`` line that imports it, so every Python process of the environment,
including the server's subprocesses, can import the old module name. Nothing else is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

NAME = "pydicom._storage_sopclass_uids"


class _StorageUIDsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serve ``pydicom._storage_sopclass_uids`` from ``pydicom.uid`` when nothing else provides it."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        return importlib.util.spec_from_loader(fullname, self) if fullname == NAME else None

    def create_module(self, spec):  # noqa: D102
        return None

    def exec_module(self, module) -> None:  # noqa: D102
        from pydicom import uid

        for name in dir(uid):
            if name.endswith("Storage"):
                setattr(module, name, getattr(uid, name))


if not any(isinstance(finder, _StorageUIDsFinder) for finder in sys.meta_path):
    sys.meta_path.append(_StorageUIDsFinder())
