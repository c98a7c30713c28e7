"""Diff-ICE: diffusion-based iterative counterfactual explanations (arXiv 2403.08700; SPEC 7).

A guided pass noises its input to the kept step ``tau`` and runs the re-spaced reverse chain; at
each step the gradient of ``lambda_c CE(f(x0_hat), SP) + lambda_p L_p(x0_hat, x_orig)`` is taken with
respect to a *detached* ``x0_hat`` (the efficient estimate: no graph through the UNet) and moves the
sample: ``z <- mean - sigma^2 g + sigma n``. Diff-ICE chains ``L`` passes, each from the previous
output, with proximity always to the original; inside *each* pass ``lambda_c`` is searched over a
list, re-running only the inputs that have not flipped, with the same starting noise ``z_tau``, so
iteration 1 is Diff-ICE_1. Baselines: ``gradient="x_t"`` back-propagates through the UNet;
``gradient="dime"`` estimates ``x0`` by a nested unguided chain (DiME); ``lambda_c = 0`` is the
unguided control.

Images are in [-1, 1] for the diffusion model; the classifier and the proximity network see [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from bundle.diffice.schedule import NoiseSchedule, RespacedSchedule

__all__ = [
    "GuidanceSettings",
    "Sampler",
    "guided_pass",
    "diff_ice",
    "search_lambda",
    "SearchResult",
    "DiffIceResult",
    "guidance_budget",
    "guidance_scale",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, original step) -> eps
GRADIENTS = ("x0", "x_t", "dime")

#: the paper's chain (N = 400 kept steps of T = 1000, tau = 120) whose guidance budget the presets match
PAPER_CHAIN = {"num_inference_steps": 400, "tau": 120}
#: the paper's image size (H x W); per-image losses spread their gradient over this many pixels
PAPER_PIXELS = 224 * 288


@dataclass
class GuidanceSettings:
    """Settings of one guided pass.

    Args:
        tau: kept step (index into the re-spaced chain) the input is noised to.
        lambda_c: weight of the classifier term (0: the unguided control).
        lambda_p: weight of the proximity term.
        target_class: class index the classifier is pushed to (1 = standard plane).
        gradient: ``"x0"`` (efficient estimate on a detached x0_hat), ``"x_t"`` (through the UNet)
            or ``"dime"`` (x0 from a nested unguided chain, no backward through the UNet).
        clip: clip x0_hat to [-1, 1].
    """

    tau: int
    lambda_c: float = 40.0
    lambda_p: float = 30.0
    target_class: int = 1
    gradient: str = "x0"
    clip: bool = True

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}")


@dataclass(frozen=True)
class Sampler:
    """The frozen parts of a guided chain: what every pass of Diff-ICE uses.

    Args:
        denoiser: ``eps = denoiser(x_t, original_step)``.
        schedule: the re-spaced chain.
        classifier: logits of (NSP, SP) for images in [0, 1]; frozen.
        proximity: frozen distance for the proximity term, or None: ``proximity.reference(x)``
            prepares the original once, ``proximity(x, reference)`` gives one distance per image
            (:class:`~bundle.diffice.networks.SpatialPerceptualDistance`).
    """

    denoiser: Denoiser
    schedule: RespacedSchedule
    classifier: Callable[[torch.Tensor], torch.Tensor]
    proximity: object | None = None


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1.0) / 2.0


def guidance_budget(schedule: NoiseSchedule, num_inference_steps: int, tau: int) -> float:
    """Total push of a pass: ``sum_i sigma_i^2`` over the guided steps ``i = tau .. 1`` of the chain.

    Each reverse step moves the sample by ``sigma_i^2 g``, so at equal ``lambda`` a chain's
    guidance adds up to this sum times the gradient.

    Args:
        schedule: the forward process.
        num_inference_steps: kept steps ``N``.
        tau: kept step the pass starts from.

    Returns:
        the sum of the step variances.
    """
    respaced = schedule.respaced(int(num_inference_steps))
    if not 0 <= tau < len(respaced):
        raise ValueError(f"tau {tau} must be a kept step in [0, {len(respaced) - 1}]")
    return float(respaced.variances[1 : int(tau) + 1].sum())


def guidance_scale(
    schedule: NoiseSchedule, num_inference_steps: int, tau: int, image_size: Sequence[int]
) -> dict[str, float]:
    """Factor on the paper's ``lambda_c`` and ``lambda_p`` so a chain pushes each pixel as the paper's does.

    Two rules, multiplied: (1) **budget**: the paper's ``sum sigma^2`` (N = 400, tau = 120) over this
    chain's, so fewer, larger steps push as much in total; (2) **image size**: pixels / (224 x 288),
    since the gradient of a per-image loss is spread over the pixels (a 64 x 64 image gets 15.75
    times more per pixel at equal lambda).

    Args:
        schedule: the forward process (the paper's T and betas give the reference budget).
        num_inference_steps: this chain's ``N``.
        tau: this chain's ``tau``.
        image_size: (H, W).

    Returns:
        ``{"budget": ..., "size": ..., "scale": budget x size}``.
    """
    reference = guidance_budget(schedule, PAPER_CHAIN["num_inference_steps"], PAPER_CHAIN["tau"])
    budget = reference / guidance_budget(schedule, num_inference_steps, tau)
    height, width = (int(v) for v in image_size)
    size = height * width / PAPER_PIXELS
    return {"budget": budget, "size": size, "scale": budget * size}


def guidance_loss(
    x0: torch.Tensor,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    proximity: object | None,
    settings: GuidanceSettings,
    reference: object | None = None,
) -> torch.Tensor:
    """Per-sample ``lambda_c CE(f(x0), target) + lambda_p L_p(x0, x_orig)`` (B,); ``reference`` from ``proximity``."""
    loss = torch.zeros(len(x0), device=x0.device, dtype=x0.dtype)
    if settings.lambda_c:
        logits = classifier(to_unit(x0))
        target = torch.full((len(x0),), settings.target_class, dtype=torch.long, device=x0.device)
        loss = loss + settings.lambda_c * F.cross_entropy(logits, target, reduction="none")
    if proximity is not None and settings.lambda_p and reference is not None:
        loss = loss + settings.lambda_p * proximity(to_unit(x0), reference)
    return loss


def _unguided_x0(z: torch.Tensor, i: int, sampler: Sampler, clip: bool, noise_like) -> torch.Tensor:
    """DiME's clean estimate: the unguided chain from kept step ``i`` down to 0 (no gradients)."""
    schedule = sampler.schedule
    with torch.no_grad():
        for j in range(i, -1, -1):
            t = torch.full((len(z),), int(schedule.timesteps[j]), device=z.device, dtype=torch.long)
            z = schedule.step(z, sampler.denoiser(z, t), j, noise_like(z) if j > 0 else None, clip)
    return z.clamp(-1.0, 1.0) if clip else z


def guided_pass(
    x: torch.Tensor,
    original: torch.Tensor,
    sampler: Sampler,
    settings: GuidanceSettings,
    generator: torch.Generator | None = None,
    start_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One guided pass: noise ``x`` to ``tau`` and denoise with guidance.

    Args:
        x: the pass's input in [-1, 1] (the original for the first pass, the last output after).
        original: the original images (proximity target).
        sampler: denoiser, re-spaced chain, frozen classifier and proximity distance.
        settings: tau, lambdas, target class, gradient mode.
        generator: random generator of the per-step noise (and of ``z_tau`` when ``start_noise`` is None).
        start_noise: the noise that makes ``z_tau`` from ``x`` (reused when a pass is re-run).

    Returns:
        the counterfactual in [-1, 1].
    """
    schedule, classifier, proximity = sampler.schedule, sampler.classifier, sampler.proximity
    tau = settings.tau
    if not 0 <= tau < len(schedule):
        raise ValueError(f"tau {tau} must be a kept step in [0, {len(schedule) - 1}]")

    def noise_like(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype)

    z = schedule.schedule.q_sample(x, schedule.timesteps[tau], noise_like(x) if start_noise is None else start_noise)
    reference = None
    if proximity is not None and settings.lambda_p:
        with torch.no_grad():
            reference = proximity.reference(to_unit(original))
    for i in range(tau, -1, -1):
        t = torch.full((len(z),), int(schedule.timesteps[i]), device=z.device, dtype=torch.long)
        variance = schedule.sigma(i) ** 2
        if settings.gradient == "x_t":
            z_in = z.detach().requires_grad_(True)
            x0 = schedule.predict_x0(z_in, sampler.denoiser(z_in, t), i, settings.clip)
            loss = guidance_loss(x0, classifier, proximity, settings, reference).sum()
            grad = torch.autograd.grad(loss, z_in)[0] if loss.requires_grad else torch.zeros_like(z)
            mean = schedule.posterior_mean(z_in, x0, i).detach()
        else:
            with torch.no_grad():
                x0 = schedule.predict_x0(z, sampler.denoiser(z, t), i, settings.clip)
                mean = schedule.posterior_mean(z, x0, i)
            estimate = _unguided_x0(z, i, sampler, settings.clip, noise_like) if settings.gradient == "dime" else x0
            x0_leaf = estimate.detach().requires_grad_(True)
            loss = guidance_loss(x0_leaf, classifier, proximity, settings, reference).sum()
            grad = torch.autograd.grad(loss, x0_leaf)[0] if loss.requires_grad else torch.zeros_like(z)
        z = mean - variance * grad
        if i > 0:
            z = z + schedule.sigma(i) * noise_like(z)
        z = z.detach()
    return z.clamp(-1.0, 1.0)


@dataclass
class SearchResult:
    """Outcome of the ``lambda_c`` search of one pass.

    Attributes:
        output: the kept counterfactual of every sample (B, ...).
        lambda_used: per sample, the ``lambda_c`` whose result is kept.
        flipped: per sample, whether the kept counterfactual is classified as the target.
        runs: per ``lambda_c``, the indices of the samples that were (re-)run with it.
    """

    output: torch.Tensor
    lambda_used: torch.Tensor
    flipped: torch.Tensor
    runs: dict[float, list[int]] = field(default_factory=dict)


def search_lambda(
    count: int,
    run: Callable[[torch.Tensor, float], torch.Tensor],
    is_flipped: Callable[[torch.Tensor], torch.Tensor],
    lambdas: Sequence[float] = (40.0, 60.0, 80.0),
) -> SearchResult:
    """Try each ``lambda_c`` in turn on the samples that have not flipped yet (one pass).

    A sample keeps the result of the first ``lambda_c`` that flips it; samples that never flip keep
    the result of the last ``lambda_c``.

    Args:
        count: number of samples ``B``.
        run: ``run(indices, lambda_c) -> outputs`` of the pass for those samples (same order).
        is_flipped: ``is_flipped(images) -> (n,) bool``.
        lambdas: the values to try, in order.

    Returns:
        a :class:`SearchResult`.
    """
    if not lambdas:
        raise ValueError("give at least one lambda_c")
    pending = list(range(count))
    output: torch.Tensor | None = None
    lambda_used = torch.full((count,), float("nan"))
    flipped = torch.zeros(count, dtype=torch.bool)
    runs: dict[float, list[int]] = {}
    for value in lambdas:
        if not pending:
            break
        runs[float(value)] = list(pending)
        index = torch.tensor(pending, dtype=torch.long)
        result = run(index, float(value))
        if output is None:
            output = torch.empty((count, *result.shape[1:]), dtype=result.dtype, device=result.device)
        output[index.to(result.device)] = result
        lambda_used[index] = float(value)
        now = is_flipped(result).cpu()
        flipped[index] = now
        pending = [p for p, f in zip(pending, now.tolist(), strict=True) if not f]
    return SearchResult(output=output, lambda_used=lambda_used, flipped=flipped, runs=runs)


@dataclass
class DiffIceResult:
    """The passes of Diff-ICE with their searches.

    Attributes:
        outputs: per iteration, the counterfactuals of all samples.
        searches: per iteration, the :class:`SearchResult` of its ``lambda_c`` search.
    """

    outputs: list[torch.Tensor]
    searches: list[SearchResult]


def diff_ice(
    original: torch.Tensor,
    sampler: Sampler,
    settings: GuidanceSettings,
    iterations: int,
    lambdas: Sequence[float],
    is_flipped: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator | None = None,
    on_iteration: Callable[[int, torch.Tensor], None] | None = None,
) -> DiffIceResult:
    """``iterations`` chained guided passes, each with its own ``lambda_c`` search.

    Pass ``l`` starts from pass ``l - 1``'s kept output (the original for ``l = 1``) and draws its
    starting noise ``z_tau`` once; the inputs that a ``lambda_c`` did not flip re-run with the next
    value from the *same* ``z_tau``. Proximity is always to ``original``.

    Args:
        original: images in [-1, 1].
        sampler: see :func:`guided_pass`.
        settings: pass settings (``lambda_c`` is replaced by each searched value).
        iterations: ``L`` (1 = Diff-ICE_1).
        lambdas: the ``lambda_c`` values searched in each pass.
        is_flipped: ``is_flipped(images in [-1, 1]) -> (n,) bool``.
        generator: random generator.
        on_iteration: called as ``(l, output)`` after each pass (1-based ``l``).

    Returns:
        a :class:`DiffIceResult`.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    outputs: list[torch.Tensor] = []
    searches: list[SearchResult] = []
    x = original
    for level in range(1, iterations + 1):
        start = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

        def run(index: torch.Tensor, lambda_c: float, x=x, start=start) -> torch.Tensor:
            index = index.to(x.device)
            chosen = replace(settings, lambda_c=lambda_c)
            return guided_pass(x[index], original[index], sampler, chosen, generator, start[index])

        search = search_lambda(len(x), run, is_flipped, lambdas)
        x = search.output
        outputs.append(x)
        searches.append(search)
        if on_iteration is not None:
            on_iteration(level, x)
    return DiffIceResult(outputs=outputs, searches=searches)
