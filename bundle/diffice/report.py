"""Counterfactual study and report: Diff-ICE and its baselines on held-out non-standard planes.

For every method (Diff-ICE, Diff-ICE_1 and the gradient-through-x_t variant) and every iteration,
the report gives the paper's Table 2 columns: flip ratio, MAD, BKL, FID-like, FSD-like, SonoSim-like,
MQD, seconds per batch and peak memory. Figures show the input and each iteration with the guide's
predicted segmentation. Everything is written atomically under ``output_dir``.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from bundle.diffice import metrics as M
from bundle.diffice.counterfactual import GuidanceSettings, Sampler, diff_ice, search_lambda, to_unit
from bundle.diffice.data import SP
from bundle.diffice.schedule import NoiseSchedule
from bundle.model.batches import plain_tensor
from bundle.utils.atomic import atomic_path, atomic_write_json, atomic_write_text
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["StudyModels", "collect", "balanced_accuracy", "mean_dice", "counterfactual_study", "write_diffice_report"]

COLUMNS = ("flip_ratio", "mad", "bkl", "fid_like", "fsd_like", "sonosim_like", "mqd", "seconds_per_batch", "peak_mb")


@dataclass(frozen=True)
class StudyModels:
    """The trained parts of a counterfactual study.

    Args:
        unet: the trained eps-prediction DDPM UNet.
        guide: the guiding classifier ``f`` (frozen, with ``segment``).
        oracle: the independent oracle classifier (frozen).
        psi: the frozen feature function on [0, 1] images.
        schedule: the forward process of the DDPM.
    """

    unet: nn.Module
    guide: nn.Module
    oracle: nn.Module
    psi: Callable[[torch.Tensor], torch.Tensor]
    schedule: NoiseSchedule


def collect(data_loader, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Stack a loader's ``image`` (B, 1, H, W), ``label``, ``plane`` and ``site`` into tensors."""
    parts: dict[str, list[torch.Tensor]] = {"image": [], "label": [], "plane": [], "site": []}
    for batch in data_loader:
        for key in parts:
            parts[key].append(plain_tensor(batch[key]))
    return {key: torch.cat(values).to(device) for key, values in parts.items()}


def balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``truth``."""
    recalls = [float((predicted[truth == c] == c).float().mean()) for c in torch.unique(truth)]
    return float(np.mean(recalls))


def mean_dice(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over the foreground classes present in ``truth`` (label maps (B, H, W))."""
    scores = []
    for c in range(1, num_classes):
        p, t = predicted == c, truth == c
        if t.any():
            scores.append(float(2 * (p & t).sum() / (p.sum() + t.sum())))
    return float(np.mean(scores)) if scores else float("nan")


@torch.no_grad()
def _probabilities(network: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Softmax probability of the standard plane for images in [0, 1]."""
    return torch.cat([torch.softmax(network(x), 1)[:, SP] for x in images.split(batch_size)])


@torch.no_grad()
def _features(fn, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    return torch.cat([fn(x) for x in images.split(batch_size)])


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def iteration_metrics(
    counterfactuals: torch.Tensor,
    originals: torch.Tensor,
    reference_sp: torch.Tensor,
    models: StudyModels,
    called_nsp: torch.Tensor | None = None,
) -> dict[str, float]:
    """Table 2 metrics of one set of counterfactuals (all images in [0, 1]).

    Args:
        counterfactuals: (B, 1, H, W).
        originals: their inputs.
        reference_sp: real standard planes (the Frechet reference).
        models: the guide (flip ratio, BKL, FSD-like features through its segmenter), the oracle
            (MQD) and ``psi`` (FID-like and SonoSim-like).
        called_nsp: (B,) bool, the inputs the guide called non-standard; adds their flip ratio.

    Returns:
        metric name -> value.
    """
    guide, oracle, psi = models.guide, models.oracle, models.psi
    p_guide = _probabilities(guide, counterfactuals)
    extra = {}
    if called_nsp is not None:
        kept = p_guide[called_nsp.to(p_guide.device)]
        extra = {"flip_ratio_guide_nsp": M.flip_ratio(kept) if len(kept) else float("nan")}
        extra["guide_nsp_inputs"] = int(called_nsp.sum())
    cf_features, orig_features = _features(psi, counterfactuals), _features(psi, originals)
    segment = guide.segment
    return {
        "flip_ratio": M.flip_ratio(p_guide),
        "mad": M.mean_absolute_difference(counterfactuals, originals),
        "bkl": M.bkl(p_guide),
        "fid_like": M.frechet_distance(cf_features, _features(psi, reference_sp)),
        "fsd_like": M.frechet_distance(
            _features(lambda x: M.segmentation_features(segment(x)), counterfactuals),
            _features(lambda x: M.segmentation_features(segment(x)), reference_sp),
        ),
        "sonosim_like": M.paired_cosine(cf_features, orig_features),
        "mqd": M.mean_quality_difference(_probabilities(oracle, counterfactuals), _probabilities(oracle, originals)),
        **extra,
    }


def _run_method(
    inputs: torch.Tensor, sampler: Sampler, chosen: GuidanceSettings, iterations: int, settings, device, scale: float
):
    """One method with the lambda_c search (each value times ``scale``); returns (search, s per pass, batches, s)."""
    generator = torch.Generator(device=device).manual_seed(int(settings["seed"]))
    pass_seconds = [0.0] * iterations
    batches = 0

    def run(subset: torch.Tensor, lambda_c: float) -> list[torch.Tensor]:
        nonlocal batches
        outputs: list[list[torch.Tensor]] = [[] for _ in range(iterations)]
        for chunk in subset.split(int(settings["batch_size"])):
            batches += 1
            started = [time.perf_counter()]

            def clock(level: int, _: torch.Tensor, started=started) -> None:
                now = time.perf_counter()
                pass_seconds[level - 1] += now - started[0]
                started[0] = now

            passes = diff_ice(
                chunk.to(device) * 2.0 - 1.0,
                sampler,
                replace(chosen, lambda_c=lambda_c * scale),
                iterations,
                generator,
                on_iteration=clock,
            )
            for level, out in enumerate(passes):
                outputs[level].append(to_unit(out).cpu())
        return [torch.cat(level) for level in outputs]

    def is_flipped(images: torch.Tensor) -> torch.Tensor:
        return _probabilities(sampler.classifier, images.to(device)).cpu() > 0.5

    started = time.perf_counter()
    search = search_lambda(inputs, run, is_flipped, tuple(settings["lambdas"]))
    return search, pass_seconds, batches, time.perf_counter() - started


def counterfactual_study(
    inputs: torch.Tensor,
    reference_sp: torch.Tensor,
    models: StudyModels,
    settings: dict,
    device: torch.device,
    methods: tuple[str, ...] = ("Diff-ICE", "Diff-ICE_1", "Diff-ICE (grad x_t)"),
) -> dict:
    """Run each method on ``inputs`` (NSP images in [0, 1]) and measure every iteration.

    Args:
        inputs: (B, 1, H, W) non-standard planes.
        reference_sp: real standard planes for the Frechet distances.
        models: the UNet, guide, oracle, ``psi`` and forward process.
        settings: ``num_inference_steps``, ``tau``, ``iterations``, ``lambdas``, ``lambda_p``,
            ``lambda_scale`` (multiplies both lambdas; default 1), ``batch_size``, ``seed``.
        device: where to run.
        methods: which methods to run.

    Returns:
        ``{"methods": {name: {"iterations": [metrics per iteration], "lambda_counts": ...}},
        "counterfactuals": {name: [tensor per iteration]}}``.
    """
    unet, guide = models.unet, models.guide
    unet.eval()

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(x, timesteps=t)

    sampler = Sampler(denoiser, models.schedule.respaced(int(settings["num_inference_steps"])), guide, models.psi)

    scale = float(settings.get("lambda_scale", 1.0))
    base = GuidanceSettings(tau=int(settings["tau"]), lambda_p=float(settings["lambda_p"]) * scale)
    results: dict = {"methods": {}, "counterfactuals": {}}
    called_nsp = _probabilities(guide, inputs.to(device)) <= 0.5
    for method in methods:
        iterations = 1 if method == "Diff-ICE_1" else int(settings["iterations"])
        chosen = replace(base, gradient="x_t" if "x_t" in method else "x0")
        search, pass_seconds, batches, elapsed = _run_method(
            inputs, sampler, chosen, iterations, settings, device, scale
        )
        rows = []
        for level, counterfactuals in enumerate(search.outputs, start=1):
            row = iteration_metrics(
                counterfactuals.to(device), inputs.to(device), reference_sp.to(device), models, called_nsp
            )
            per_batch = sum(pass_seconds[:level]) / max(batches, 1)
            row.update({"iteration": level, "seconds_per_batch": per_batch, "peak_mb": _peak_mb(device)})
            rows.append(row)
        lambda_counts = {str(v): int((search.lambda_used == v).sum()) for v in settings["lambdas"]}
        results["methods"][method] = {
            "iterations": rows,
            "lambda_counts": lambda_counts,
            "reruns": {str(k): len(v) for k, v in search.runs.items()},
            "final_flip_ratio_guide": float(search.flipped.float().mean()),
            "seconds": elapsed,
        }
        results["counterfactuals"][method] = search.outputs
        logger.info(f"{method}: flip ratio {rows[-1]['flip_ratio']:.3f}, MQD {rows[-1]['mqd']:+.3f} in {elapsed:.1f} s")
    return results


def _markdown(summary: dict) -> str:
    lines = ["# Diff-ICE counterfactuals", ""]
    models = summary["models"]
    lines += [
        f"Guide balanced accuracy (test): {models['guide_balanced_accuracy']:.3f}; oracle: "
        f"{models['oracle_balanced_accuracy']:.3f}; segmentation mean Dice: {models['segmentation_dice']:.3f}.",
        f"Inputs: {summary['inputs']} held-out non-standard planes; reference: {summary['reference']} standard planes.",
        "",
        "| method | iteration | flip ratio | flips of guide-NSP | MAD | BKL | FID-like | FSD-like | SonoSim-like "
        "| MQD | s/batch | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    b = summary["inputs_row"]
    lines.append(
        f"| inputs (no change) | 0 | {b['flip_ratio']:.3f} | 0 | 0 | {b['bkl']:.3f} | {b['fid_like']:.3f} | "
        f"{b['fsd_like']:.4f} | 1 | 0 | - | - |"
    )
    for method, result in summary["methods"].items():
        for row in result["iterations"]:
            lines.append(
                f"| {method} | {row['iteration']} | {row['flip_ratio']:.3f} | {row['flip_ratio_guide_nsp']:.3f} "
                f"({row['guide_nsp_inputs']}) | {row['mad']:.4f} | {row['bkl']:.3f} | "
                f"{row['fid_like']:.3f} | {row['fsd_like']:.4f} | {row['sonosim_like']:.3f} | {row['mqd']:+.3f} | "
                f"{row['seconds_per_batch']:.2f} | {row['peak_mb']:.0f} |"
            )
    lines += ["", "lambda_c kept per input (first value that flips it; the last value when none does):", ""]
    for method, result in summary["methods"].items():
        lines.append(f"- {method}: {result['lambda_counts']} (re-run inputs per value: {result['reruns']})")
    return "\n".join(lines) + "\n"


def _figure(inputs: torch.Tensor, results: dict, guide: nn.Module, path: Path, device, count: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    method = next(iter(results["counterfactuals"]))
    order = torch.argsort(_probabilities(guide, inputs.to(device)).cpu())[: min(count, len(inputs))]
    count = len(order)
    columns = [inputs[order], *[s[order] for s in results["counterfactuals"][method]]]
    steps = columns[1:]
    titles = ["input (NSP)", *[f"iteration {i}" for i in range(1, len(steps) + 1)]]
    fig, axes = plt.subplots(2 * count, len(columns), figsize=(2 * len(columns), 4 * count), squeeze=False)
    for c, (images, title) in enumerate(zip(columns, titles, strict=True)):
        with torch.no_grad():
            p_sp = _probabilities(guide, images.to(device)).cpu()
            seg = guide.segment(images.to(device)).argmax(1).cpu()
        for r in range(count):
            axes[2 * r, c].imshow(images[r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[2 * r, c].set_title(f"{title}\np_SP {p_sp[r]:.2f}", fontsize=8)
            axes[2 * r + 1, c].imshow(seg[r].numpy(), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
            axes[2 * r + 1, c].set_title("predicted structures", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"{method}: the inputs the guide finds least standard, and each iteration")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def write_diffice_report(
    test_loader,
    models: StudyModels,
    settings: dict,
    output_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    num_structures: int = 5,
) -> Path:
    """Evaluate the guide and oracle, run the counterfactual study, write ``results.{json,md}`` and figures.

    Args:
        test_loader: loader over the held-out test items.
        models: the trained UNet, guide (with ``segment``), oracle, ``psi`` and forward process.
        settings: see :func:`counterfactual_study`, plus ``max_inputs`` and ``methods``.
        output_dir: report folder (created).
        device: where to run.
        num_structures: segmentation classes.

    Returns:
        path of ``results.json``.
    """
    device = torch.device(device)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    guide, oracle = models.guide, models.oracle
    for network in (models.unet, guide, oracle):
        network.to(device).eval()
    test = collect(test_loader, device)
    images = test["image"]
    accuracy = {
        "guide_balanced_accuracy": balanced_accuracy(_features(lambda x: guide(x).argmax(1), images), test["plane"]),
        "oracle_balanced_accuracy": balanced_accuracy(_features(lambda x: oracle(x).argmax(1), images), test["plane"]),
        "segmentation_dice": mean_dice(
            _features(lambda x: guide.segment(x).argmax(1), images), test["label"][:, 0], num_structures
        ),
    }
    nsp = test["image"][test["plane"] != SP][: int(settings["max_inputs"])].cpu()
    reference = test["image"][test["plane"] == SP].cpu()
    results = counterfactual_study(nsp, reference, models, settings, device, tuple(settings["methods"]))
    baseline = iteration_metrics(nsp.to(device), nsp.to(device), reference.to(device), models)
    summary = {
        "models": accuracy,
        "inputs_row": baseline,
        "inputs": len(nsp),
        "reference": len(reference),
        "settings": dict(settings),
        "methods": results["methods"],
    }
    _figure(nsp, results, guide, output / "counterfactuals.png", device)
    arrays = {"inputs": nsp.numpy()}
    for method, steps in results["counterfactuals"].items():
        for level, images in enumerate(steps, start=1):
            arrays[f"{method}_iteration{level}"] = images.numpy()
    with atomic_path(output / "counterfactuals.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    atomic_write_text(output / "results.md", _markdown(summary))
    atomic_write_json(output / "results.json", summary)
    logger.info(f"Diff-ICE report in {output}")
    return output / "results.json"
