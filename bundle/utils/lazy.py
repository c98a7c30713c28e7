"""Lazy public names for the subpackages (PEP 562), so that importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """A module ``__getattr__`` importing each public name from its module on first use, and ``__all__``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> module (relative to the package) that defines it.

    Returns:
        ``(__getattr__, __all__)`` for the package's ``__init__``.
    """

    def __getattr__(name: str) -> object:  # noqa: N807 (the module hook's required name)
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__, sorted(exports)
