"""The one place that knows where the bundle lives and how its configs are parsed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = REPO_ROOT / "configs"
TRAIN_CONFIG = CONFIGS_DIR / "train.json"
INFERENCE_CONFIG = CONFIGS_DIR / "inference.json"
METADATA_FILE = REPO_ROOT / "metadata.json"


def config_file(name: str) -> Path:
    """The path of ``configs/<name>`` in this bundle (``name`` may include a subfolder)."""
    return CONFIGS_DIR / name


def load_config(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    overrides: Mapping | None = None,
    meta_file: str | os.PathLike | None = None,
    parse: bool = False,
):
    """A :class:`monai.bundle.ConfigParser` of one or several config files, with overrides applied.

    Config files are code: MONAI evaluates their ``$`` expressions, so read only trusted ones.

    Args:
        files: a config file or a list of them (later files override earlier ones, as in
            ``monai.bundle run``).
        overrides: ``{"key#sub": value}`` updates applied after reading.
        meta_file: metadata file to read as ``_meta_``.
        parse: resolve references before returning (``parser.parse()``).

    Returns:
        the parser.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    if isinstance(files, (str, os.PathLike)):
        parser.read_config(str(files))
    else:
        parser.read_config([str(f) for f in files])
    if meta_file is not None:
        parser.read_meta(str(meta_file))
    parser.update(dict(overrides or {}))
    if parse:
        parser.parse()
    return parser
