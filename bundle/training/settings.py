"""Checks of the main job's settings by name, before anything is written (``check_values`` in ``train.json``).

A value given on the command line (``--phase1_epochs abc``) otherwise reaches an engine or a network
and fails deep inside it with a message that names neither the setting nor the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real

__all__ = ["RULES", "RUN_KEYS", "as_flag", "check_setting_values", "run_settings"]

FLAG_WORDS = {"true": True, "false": False}


def as_flag(value: object, name: str | None = None) -> bool:
    """A switch given as ``true`` / ``false`` in any form: JSON, Python or a bool.

    ``--localizer false`` reaches the config as the string ``'false'`` (MONAI's command line reads
    Python literals, so only ``False`` would be a bool).

    Args:
        value: the setting's value.
        name: the setting's key, named in the error with the fix.

    Raises:
        ValueError: for anything else (naming the value, and the key and fix when given).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in FLAG_WORDS:
        return FLAG_WORDS[value.strip().lower()]
    if name:
        raise ValueError(f"setting {name} = {value!r} must be true or false; e.g. --{name} false")
    raise ValueError(f"{value!r} is not true or false")


def _whole(low: int) -> tuple[Callable[[object], bool], str]:
    return (lambda v: isinstance(v, Integral) and not isinstance(v, bool) and v >= low), f"a whole number >= {low}"


def _number(low: float, high: float | None = None, open_low: bool = False) -> tuple[Callable[[object], bool], str]:
    def ok(v: object) -> bool:
        if not isinstance(v, Real) or isinstance(v, bool) or v != v:
            return False
        above = v > low if open_low else v >= low
        return above and (high is None or v < high)

    bound = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high is not None else "")
    return ok, f"a number {bound}"


def _choice(*options: str) -> tuple[Callable[[object], bool], str]:
    return (lambda v: v in options), "one of " + ", ".join(options)


def _multiple(of: int) -> tuple[Callable[[object], bool], str]:
    return (lambda v: isinstance(v, Integral) and not isinstance(v, bool) and v >= of and v % of == 0), (
        f"a positive multiple of {of} (the encoder halves it {of.bit_length() - 1} times)"
    )


#: setting -> (test, what it must be, an example value)
RULES: dict[str, tuple[Callable[[object], bool], str, str]] = {
    "phase1_epochs": (*_whole(0), "30"),
    "phase2_epochs": (*_whole(0), "15"),
    "batch_size": (*_whole(1), "16"),
    "seed": (*_whole(0), "0"),
    # -1 (a site no image has) or null holds out nothing: the MONAI Label app trains on every labelled image
    "held_out_site": ((lambda v: v is None or _whole(-1)[0](v)), "a site index, -1 or null for none", "2"),
    "val_fraction": (*_number(0.0, 1.0, open_low=True), "0.15"),
    "lr": (*_number(0.0, open_low=True), "0.001"),
    "phase2_lr_factor": (*_number(0.0, open_low=True), "0.1"),
    "canvas_size": (*_multiple(32), "128"),
    "roi_canvas_size": (*_multiple(16), "64"),
    "roi_margin": (*_number(0.0), "0.5"),
    "latent_dim": (*_whole(1), "128"),
    "calibration_batches": (*_whole(1), "20"),
    "early_stop_patience": (*_whole(1), "15"),
    "model": (*_choice("dual_view", "paper"), "dual_view"),
    "loss_weighting": (*_choice("calibrated", "equal", "uncertainty"), "calibrated"),
    "phase2_freeze": (*_choice("none", "encoder"), "none"),
    "lr_schedule": (*_choice("constant", "cosine"), "constant"),
    "augment": ((lambda v: isinstance(v, bool)), "true or false", "true"),
    "localizer": ((lambda v: isinstance(v, bool) or str(v).strip().lower() in FLAG_WORDS), "true or false", "false"),
    "localizer_epochs": (*_whole(1), "20"),
    "localizer_refine_epochs": (*_whole(1), "30"),
}


def check_setting_values(values: dict) -> dict:
    """Refuse any setting whose value is not of its kind, naming the key, the value and an example.

    Args:
        values: setting name -> value (the keys of :data:`RULES` that the config passes).

    Returns:
        ``values``.

    Raises:
        ValueError: listing every bad setting (``--key value`` to fix it); the last line names one.
    """
    problems = []
    for key, value in values.items():
        if key not in RULES:
            continue
        test, kind, example = RULES[key]
        if not test(value):
            problems.append(f"setting {key} = {value!r} must be {kind}; e.g. --{key} {example}")
    if problems:
        raise ValueError("; ".join(problems) + " (nothing was started)")
    return values


#: the settings that define a run folder (``output_dir/run_settings.json``): a resume with others is refused
RUN_KEYS = (
    "held_out_site",
    "val_fraction",
    "seed",
    "model",
    "canvas_size",
    "roi_canvas_size",
    "roi_margin",
    "network_widths",
    "roi_network_widths",
    "latent_dim",
    "loss_weighting",
    "phase2_freeze",
    "augment",
)


def run_settings(dataset_dir: str, values: dict, architecture: dict) -> dict:
    """The settings that define a run (:data:`RUN_KEYS` and the dataset), for ``check_run_settings``.

    Args:
        dataset_dir: the dataset folder or datalist.
        values: the checked setting values (``setting_values`` of ``train.json``).
        architecture: the network's settings (``architecture``), which hold the widths.

    Returns:
        ``{"dataset_dir": ..., key: value for each of RUN_KEYS}``.
    """
    known = {**values, **architecture}
    return {"dataset_dir": dataset_dir, **{key: known[key] for key in RUN_KEYS}}
