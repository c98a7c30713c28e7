"""Counterfactual study and report: Diff-ICE, its baselines and the unguided control on held-out images.

The inputs are the held-out images the guide calls non-standard (the paper's protocol). For every
method and iteration the report gives the paper's Table 2 columns (:mod:`bundle.diffice.metrics`):
flip ratio, MAD (guide probability change), BKL, FID and FSD (inputs vs valid counterfactuals),
SonoSim, MQD; then the pixel change, the distance to real standard planes, seconds per batch, total
seconds and peak memory. Realism and similarity features come from networks that are neither the
guide nor the proximity network: FID from the evaluation feature network, FSD and SonoSim from the
oracle. Everything is written atomically under ``output_dir``.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bundle.diffice import metrics as M
from bundle.diffice.counterfactual import GuidanceSettings, Sampler, diff_ice, guidance_scale, to_unit
from bundle.diffice.data import NSP, SP
from bundle.diffice.networks import oracle_features
from bundle.diffice.schedule import NoiseSchedule
from bundle.model.batches import plain_tensor
from bundle.utils.atomic import atomic_path, atomic_write_json, atomic_write_text
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "StudyModels",
    "METHODS",
    "collect",
    "balanced_accuracy",
    "mean_dice",
    "classifier_summary",
    "iteration_metrics",
    "counterfactual_study",
    "write_diffice_report",
]

#: method name -> (gradient estimate, iterations: "L" or 1, lambda_c searched: "search" or "zero")
METHODS: dict[str, tuple[str, str, str]] = {
    "Diff-ICE": ("x0", "L", "search"),
    "Diff-ICE_1 (grad x_t)": ("x_t", "1", "search"),
    "DiME": ("dime", "1", "search"),
    "unguided (lambda_c = 0)": ("x0", "L", "zero"),
}
#: the paper's Table 1 (real data, 224 x 288): method -> metric -> value
PAPER_TABLE = {
    "Diff-ICE (L = 5)": {"flip_ratio": 0.982, "mad": 0.284, "bkl": 0.336, "mqd": 0.371, "sonosim": 0.790, "fid": 42.4},
    "Diff-ICE_1": {"flip_ratio": 0.982, "mad": 0.234, "mqd": 0.253},
    "DiME": {"flip_ratio": 0.966, "mad": 0.231},
}
NSP_TYPES = ("oblique", "tilted", "blurred")


@dataclass(frozen=True)
class StudyModels:
    """The trained parts of a counterfactual study.

    Args:
        unet: the trained eps-prediction DDPM UNet (EMA weights).
        guide: the guiding classifier ``f`` (frozen, with ``segment``).
        oracle: the independent oracle classifier (frozen; MQD, and the FSD / SonoSim features).
        proximity: the proximity distance ``L_p`` (:class:`~bundle.diffice.networks.SpatialPerceptualDistance`).
        evaluator: the evaluation feature network of FID (frozen; neither the guide nor ``psi``).
        schedule: the forward process of the DDPM.
    """

    unet: nn.Module
    guide: nn.Module
    oracle: nn.Module
    proximity: object
    evaluator: nn.Module
    schedule: NoiseSchedule


def collect(data_loader, device: str | torch.device = "cpu") -> dict[str, object]:
    """Stack a loader's ``image`` (B, 1, H, W), ``label``, ``plane``, ``site`` and the ``reason`` strings."""
    parts: dict[str, list] = {"image": [], "label": [], "plane": [], "site": [], "reason": []}
    for batch in data_loader:
        for key in parts:
            value = batch[key]
            parts[key].append(list(value) if key == "reason" else plain_tensor(value))
    out: dict[str, object] = {key: torch.cat(values).to(device) for key, values in parts.items() if key != "reason"}
    out["reason"] = np.array([r for chunk in parts["reason"] for r in chunk])
    return out


def balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``truth`` (``sklearn.metrics.balanced_accuracy_score``)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(truth.cpu().numpy(), predicted.cpu().numpy()))


def mean_dice(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over the foreground classes present in ``truth`` (label maps (B, H, W))."""
    scores = []
    for c in range(1, num_classes):
        p, t = predicted == c, truth == c
        if t.any():
            scores.append(float(2 * (p & t).sum() / (p.sum() + t.sum())))
    return float(np.mean(scores)) if scores else float("nan")


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    return torch.cat([fn(x) for x in images.split(batch_size)])


def _p_sp(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the standard plane for images in [0, 1]."""
    return _batched(lambda x: torch.softmax(network(x), 1)[:, SP], images)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def classifier_summary(p_sp: torch.Tensor, plane: torch.Tensor, reason: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, standard-plane recall and the recall of each non-standard type.

    Args:
        p_sp: predicted standard-plane probabilities (N,).
        plane: true classes (1 = SP).
        reason: per image ``standard`` or the non-standard type.

    Returns:
        ``balanced_accuracy``, ``recall_standard`` and ``recall_<type>`` (share called NSP).
    """
    predicted = (p_sp > 0.5).long().cpu()
    plane = plane.cpu()
    out = {"balanced_accuracy": balanced_accuracy(predicted, plane)}
    out["recall_standard"] = float((predicted[plane == SP] == SP).float().mean())
    for kind in NSP_TYPES:
        mask = torch.as_tensor(reason == kind)
        out[f"recall_{kind}"] = float((predicted[mask] == NSP).float().mean()) if mask.any() else float("nan")
    return out


def iteration_metrics(
    counterfactuals: torch.Tensor, inputs: torch.Tensor, models: StudyModels, reference_sp: torch.Tensor, reason=None
) -> dict[str, float]:
    """The paper's Table 2 metrics of one set of counterfactuals of ``inputs`` (all images in [0, 1]).

    Args:
        counterfactuals: (N, 1, H, W).
        inputs: their inputs (the images the guide calls non-standard).
        models: guide (validity), oracle (MQD; FSD and SonoSim features), evaluator (FID features).
        reference_sp: real held-out standard planes (the extra ``fid_to_real_sp`` column).
        reason: per input its non-standard type (adds ``flip_ratio_<type>``), or None.

    Returns:
        metric name -> value.
    """
    guide, oracle = models.guide, models.oracle
    p_cf, p_in = _p_sp(guide, counterfactuals), _p_sp(guide, inputs)
    valid = p_cf > 0.5
    o_cf, o_in = _p_sp(oracle, counterfactuals), _p_sp(oracle, inputs)
    evaluation = lambda x: models.evaluator.features(x)  # noqa: E731
    oracle_fn = lambda x: oracle_features(oracle, x)  # noqa: E731
    eval_in, eval_cf = _batched(evaluation, inputs), _batched(evaluation, counterfactuals)
    sono_in, sono_cf = _batched(oracle_fn, inputs), _batched(oracle_fn, counterfactuals)
    row = {
        "inputs": len(inputs),
        "valid": int(valid.sum()),
        "flip_ratio": M.flip_ratio(p_cf),
        "mad": M.mean_absolute_difference(p_cf, p_in),
        "bkl": M.bkl(p_cf),
        "fid": M.frechet_distance(eval_in, eval_cf[valid]),
        "fsd": M.frechet_distance(sono_in, sono_cf[valid]),
        "sonosim": M.paired_cosine(sono_cf, sono_in),
        "mqd": M.mean_quality_difference(o_cf, o_in),
        "pixel_change": M.pixel_change(counterfactuals, inputs),
        "fid_to_real_sp": M.frechet_distance(eval_cf, _batched(evaluation, reference_sp)),
        "oracle_flip_ratio": M.flip_ratio(o_cf),
    }
    if reason is not None:
        for kind in NSP_TYPES:
            mask = torch.as_tensor(reason == kind, device=p_cf.device)
            row[f"flip_ratio_{kind}"] = M.flip_ratio(p_cf[mask]) if mask.any() else float("nan")
    return row


def method_settings(name: str, settings: dict, scale: float) -> tuple[GuidanceSettings, int, tuple[float, ...]]:
    """The pass settings, iterations and searched ``lambda_c`` of a method of :data:`METHODS`."""
    if name not in METHODS:
        raise ValueError(f"counterfactual#methods: unknown method {name!r}; choose from {sorted(METHODS)}")
    gradient, iterations, search = METHODS[name]
    guidance = GuidanceSettings(
        tau=int(settings["tau"]), lambda_p=float(settings["lambda_p"]) * scale, gradient=gradient
    )
    lambdas = tuple(float(v) * scale for v in settings["lambdas"]) if search == "search" else (0.0,)
    return guidance, int(settings["iterations"]) if iterations == "L" else 1, lambdas


def _run_method(inputs: torch.Tensor, sampler: Sampler, name: str, settings: dict, scale: float, device) -> dict:
    """One method on every batch of ``inputs``: outputs per iteration, kept lambda_c, timings."""
    guidance, iterations, lambdas = method_settings(name, settings, scale)
    generator = torch.Generator(device=device).manual_seed(int(settings["seed"]))
    pass_seconds = [0.0] * iterations
    outputs: list[list[torch.Tensor]] = [[] for _ in range(iterations)]
    lambda_used: list[list[torch.Tensor]] = [[] for _ in range(iterations)]
    reruns = [0] * iterations
    batches = 0

    def is_flipped(images: torch.Tensor) -> torch.Tensor:
        return _p_sp(sampler.classifier, to_unit(images)) > 0.5

    started = time.perf_counter()
    for chunk in inputs.split(int(settings["batch_size"])):
        batches += 1
        clock = [time.perf_counter()]

        def tick(level: int, _: torch.Tensor, clock=clock) -> None:
            now = time.perf_counter()
            pass_seconds[level - 1] += now - clock[0]
            clock[0] = now
            logger.info(f"{name}: iteration {level}/{iterations} of batch {batches} done")

        result = diff_ice(
            chunk.to(device) * 2.0 - 1.0, sampler, guidance, iterations, lambdas, is_flipped, generator, tick
        )
        done = min(batches * int(settings["batch_size"]), len(inputs))
        logger.info(f"{name}: {done}/{len(inputs)} inputs, {time.perf_counter() - started:.0f} s")
        for level, (out, search) in enumerate(zip(result.outputs, result.searches, strict=True)):
            outputs[level].append(to_unit(out).cpu())
            lambda_used[level].append(search.lambda_used / scale)
            reruns[level] += sum(len(v) for v in search.runs.values()) - len(chunk)
    return {
        "outputs": [torch.cat(level) for level in outputs],
        "lambda_used": [torch.cat(level) for level in lambda_used],
        "reruns": reruns,
        "seconds_per_batch": [sum(pass_seconds[: i + 1]) / max(batches, 1) for i in range(iterations)],
        "seconds": time.perf_counter() - started,
    }


def counterfactual_study(
    inputs: torch.Tensor,
    reference_sp: torch.Tensor,
    models: StudyModels,
    settings: dict,
    device: torch.device,
    methods: tuple[str, ...] = ("Diff-ICE", "unguided (lambda_c = 0)"),
    reason: np.ndarray | None = None,
) -> dict:
    """Run each method on ``inputs`` (images the guide calls NSP, in [0, 1]) and measure every iteration.

    Args:
        inputs: (N, 1, H, W).
        reference_sp: real held-out standard planes (extra column ``fid_to_real_sp``).
        models: the UNet, guide, oracle, proximity distance, evaluator and forward process.
        settings: ``num_inference_steps``, ``tau``, ``iterations``, ``lambdas``, ``lambda_p``,
            ``batch_size``, ``seed``, ``image_size`` (for :func:`guidance_scale`).
        device: where to run.
        methods: names from :data:`METHODS`; Diff-ICE's first iteration is reported as Diff-ICE_1.
        reason: per input its non-standard type, for the per-type flip ratios.

    Returns:
        ``{"methods": {name: {"iterations": [...], ...}}, "counterfactuals": {name: [per iteration]},
        "guidance": scale factors}``.
    """
    unet = models.unet.eval()

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(x, timesteps=t)

    steps, tau = int(settings["num_inference_steps"]), int(settings["tau"])
    sampler = Sampler(denoiser, models.schedule.respaced(steps), models.guide, models.proximity)
    guidance = guidance_scale(models.schedule, steps, tau, settings["image_size"])
    results: dict = {"methods": {}, "counterfactuals": {}, "guidance": guidance}
    for name in methods:
        run = _run_method(inputs, sampler, name, settings, guidance["scale"], device)
        rows = []
        for level, counterfactuals in enumerate(run["outputs"], start=1):
            row = iteration_metrics(counterfactuals.to(device), inputs.to(device), models, reference_sp, reason)
            values, counts = torch.unique(run["lambda_used"][level - 1], return_counts=True)
            counts = {f"{float(v):g}": int(n) for v, n in zip(values, counts, strict=True)}
            row.update(
                {
                    "iteration": level,
                    "seconds_per_batch": run["seconds_per_batch"][level - 1],
                    "peak_mb": _peak_mb(device),
                    "lambda_counts": counts,
                    "reruns": run["reruns"][level - 1],
                }
            )
            rows.append(row)
        results["methods"][name] = {"iterations": rows, "seconds": run["seconds"]}
        results["counterfactuals"][name] = run["outputs"]
        last = rows[-1]
        logger.info(
            f"{name}: flip ratio {last['flip_ratio']:.3f}, MAD {last['mad']:.3f}, MQD {last['mqd']:+.3f} "
            f"after {len(rows)} iteration(s), {run['seconds']:.0f} s"
        )
    return results


def _fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _rows(summary: dict) -> list[tuple[str, dict]]:
    """(label, row) of the table: inputs, every method's iterations, Diff-ICE_1 = Diff-ICE's first."""
    out = [("inputs (no change)", summary["inputs_row"])]
    for name, result in summary["methods"].items():
        for row in result["iterations"]:
            out.append((name, row))
            if name == "Diff-ICE" and row["iteration"] == 1:
                out.append(("Diff-ICE_1 (= Diff-ICE iteration 1)", row))
    return out


def _markdown(summary: dict) -> str:
    guide, oracle = summary["guide"], summary["oracle"]
    lines = [
        "# Diff-ICE counterfactuals",
        "",
        f"Held-out images: {summary['test_images']}. Inputs: the {summary['inputs']} the guide calls non-standard "
        f"({summary['inputs_truly_nsp']} truly non-standard).",
        "",
        "| classifier | balanced accuracy | recall SP | recall oblique | recall tilted | recall blurred |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in (("guide", guide), ("oracle", oracle)):
        lines.append(
            f"| {name} | {_fmt(c['balanced_accuracy'])} | {_fmt(c['recall_standard'])} | {_fmt(c['recall_oblique'])} "
            f"| {_fmt(c['recall_tilted'])} | {_fmt(c['recall_blurred'])} |"
        )
    lines += [
        "",
        f"Segmentation mean Dice: {_fmt(summary['segmentation_dice'])}. Guidance scale on the paper's lambdas: "
        f"{summary['guidance']['scale']:.4f} (budget {summary['guidance']['budget']:.3f} x image size "
        f"{summary['guidance']['size']:.4f}).",
        "",
        "| method | iteration | flip ratio | MAD | BKL | FID | FSD | SonoSim | MQD | pixel change | FID to real SP "
        "| s/batch | total s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in _rows(summary):
        total = summary["methods"].get(label, {}).get("seconds", float("nan"))
        lines.append(
            f"| {label} | {row.get('iteration', 0)} | {_fmt(row['flip_ratio'])} | {_fmt(row['mad'])} | "
            f"{_fmt(row['bkl'])} | {_fmt(row['fid'], 2)} | {_fmt(row['fsd'], 2)} | {_fmt(row['sonosim'])} | "
            f"{row['mqd']:+.3f} | {_fmt(row['pixel_change'], 4)} | {_fmt(row['fid_to_real_sp'], 2)} | "
            f"{_fmt(row.get('seconds_per_batch', float('nan')), 1)} | {_fmt(total, 0)} | "
            f"{_fmt(row.get('peak_mb', float('nan')), 0)} |"
        )
    lines += ["", "Paper (Table 1, real data, 224 x 288), for reference:", ""]
    lines += [f"- {name}: " + ", ".join(f"{k} {v}" for k, v in values.items()) for name, values in PAPER_TABLE.items()]
    lines += ["", "Flip ratio per non-standard type (last iteration):", ""]
    lines += ["| method | " + " | ".join(NSP_TYPES) + " |", "|---|" + "---|" * len(NSP_TYPES)]
    for name, result in summary["methods"].items():
        last = result["iterations"][-1]
        lines.append(f"| {name} | " + " | ".join(_fmt(last[f"flip_ratio_{k}"]) for k in NSP_TYPES) + " |")
    lines += ["", "lambda_c kept per input and iteration (first value that flips it, else the last):", ""]
    for name, result in summary["methods"].items():
        counts = [f"{r['iteration']}: {r['lambda_counts']} ({r['reruns']} re-runs)" for r in result["iterations"]]
        lines.append(f"- {name}: " + "; ".join(counts))
    return "\n".join(lines) + "\n"


def _figure(inputs: torch.Tensor, results: dict, guide: nn.Module, path: Path, device, count: int = 3) -> None:
    """Per chosen input: images, |x_c - x| maps and the guide's structures for each Diff-ICE iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    method = "Diff-ICE" if "Diff-ICE" in results["counterfactuals"] else next(iter(results["counterfactuals"]))
    order = torch.argsort(_p_sp(guide, inputs.to(device)).cpu())[: min(count, len(inputs))]
    columns = [inputs[order], *[s[order] for s in results["counterfactuals"][method]]]
    titles = ["input", *[f"{method} {i}" for i in range(1, len(columns))]]
    control = next((k for k in results["counterfactuals"] if k.startswith("unguided")), None)
    if control is not None:
        columns.append(results["counterfactuals"][control][-1][order])
        titles.append("unguided (last)")
    rows = len(order)
    fig, axes = plt.subplots(
        3 * rows, len(columns), figsize=(1.9 * len(columns) + 1.2, 5.4 * rows), squeeze=False, layout="constrained"
    )
    for c, (images, title) in enumerate(zip(columns, titles, strict=True)):
        with torch.no_grad():
            p_sp = _p_sp(guide, images.to(device)).cpu()
            seg = guide.segment(images.to(device)).argmax(1).cpu()
        for r in range(rows):
            axes[3 * r, c].imshow(images[r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[3 * r, c].set_title(f"{title}\np_SP {p_sp[r]:.2f}", fontsize=8)
            change = (images[r, 0] - columns[0][r, 0]).abs().numpy()
            shown = axes[3 * r + 1, c].imshow(change, cmap="magma", vmin=0, vmax=0.5)
            axes[3 * r + 1, c].set_title("|x_c - x|", fontsize=7)
            axes[3 * r + 2, c].imshow(seg[r].numpy(), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
            axes[3 * r + 2, c].set_title("guide's structures", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[:, -1], shrink=0.3, label="|x_c - x| (grey levels, clipped at 0.5)")
    fig.suptitle(f"{method}: the inputs the guide finds least standard, each iteration, the unguided control")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def write_diffice_report(
    test_loader,
    models: StudyModels,
    settings: dict,
    output_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    num_structures: int = 5,
) -> Path:
    """Evaluate the guide and the oracle, run the counterfactual study, write ``results.{json,md}`` and figures.

    Args:
        test_loader: loader over the held-out test items.
        models: the trained UNet, guide (with ``segment``), oracle, proximity, evaluator and forward process.
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
    for network in (models.unet, guide, oracle, models.evaluator):
        network.to(device).eval()
    test = collect(test_loader, device)
    images, plane, reason = test["image"], test["plane"], test["reason"]
    p_guide = _p_sp(guide, images)
    called_nsp = (p_guide <= 0.5).cpu()
    chosen = torch.nonzero(called_nsp).flatten()[: int(settings["max_inputs"])]
    inputs = images[chosen.to(device)].cpu()
    input_reason = reason[chosen.numpy()]
    reference = images[plane == SP].cpu()
    if len(inputs) == 0:
        raise ValueError("the guide calls no held-out image non-standard: there is nothing to explain")
    results = counterfactual_study(
        inputs, reference, models, settings, device, tuple(settings["methods"]), input_reason
    )
    baseline = iteration_metrics(inputs.to(device), inputs.to(device), models, reference, input_reason)
    summary = {
        "test_images": len(images),
        "inputs": len(inputs),
        "inputs_truly_nsp": int((plane.cpu()[chosen] == NSP).sum()),
        "guide": classifier_summary(p_guide, plane, reason),
        "oracle": classifier_summary(_p_sp(oracle, images), plane, reason),
        "segmentation_dice": mean_dice(
            _batched(lambda x: guide.segment(x).argmax(1), images), test["label"][:, 0], num_structures
        ),
        "guidance": results["guidance"],
        "inputs_row": baseline,
        "settings": dict(settings),
        "methods": results["methods"],
        "paper": PAPER_TABLE,
    }
    _figure(inputs, results, guide, output / "counterfactuals.png", device)
    arrays = {"inputs": inputs.numpy()}
    for method, steps in results["counterfactuals"].items():
        for level, counterfactuals in enumerate(steps, start=1):
            arrays[f"{method}_iteration{level}"] = counterfactuals.numpy()
    with atomic_path(output / "counterfactuals.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    atomic_write_text(output / "results.md", _markdown(summary))
    atomic_write_json(output / "results.json", summary)
    logger.info(f"Diff-ICE report in {output}: results.md, results.json, counterfactuals.png")
    return output / "results.json"
