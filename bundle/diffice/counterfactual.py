"""Diff-ICE: diffusion-based iterative counterfactual explanations (arXiv 2403.08700; SPEC 7).

A guided pass noises the input to the kept step ``tau`` and runs the re-spaced reverse chain; at
each step the gradient of ``lambda_c CE(f(x0_hat), SP) + lambda_p ||psi(x0_hat) - psi(x_orig)||^2``
is taken with respect to a *detached* ``x0_hat`` (the efficient estimate: no graph through the
UNet) and moves the sample: ``z <- mean - sigma^2 g + sigma n``. Diff-ICE chains ``L`` passes, each
from the previous output, with proximity always to the original; ``lambda_c`` is searched over a
list, re-running only the samples that have not flipped. The baseline ``gradient="x_t"``
back-propagates through the UNet instead.

Images are in [-1, 1] for the diffusion model; the classifier and ``psi`` receive [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from bundle.diffice.schedule import RespacedSchedule

__all__ = ["GuidanceSettings", "Sampler", "guided_pass", "diff_ice", "search_lambda", "SearchResult"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, original step) -> eps


@dataclass
class GuidanceSettings:
    """Settings of one guided pass.

    Args:
        tau: kept step (index into the re-spaced chain) the input is noised to.
        lambda_c: weight of the classifier term.
        lambda_p: weight of the proximity term.
        target_class: class index the classifier is pushed to (1 = standard plane).
        gradient: ``"x0"`` (efficient estimate on a detached x0_hat) or ``"x_t"`` (through the UNet).
        clip: clip x0_hat to [-1, 1].
    """

    tau: int
    lambda_c: float = 40.0
    lambda_p: float = 30.0
    target_class: int = 1
    gradient: str = "x0"
    clip: bool = True

    def __post_init__(self) -> None:
        if self.gradient not in ("x0", "x_t"):
            raise ValueError(f"gradient must be 'x0' or 'x_t', got {self.gradient!r}")


@dataclass(frozen=True)
class Sampler:
    """The frozen parts of a guided chain: what every pass of Diff-ICE uses.

    Args:
        denoiser: ``eps = denoiser(x_t, original_step)``.
        schedule: the re-spaced chain.
        classifier: logits of (NSP, SP) for images in [0, 1]; frozen.
        psi: frozen feature extractor for the proximity term, or None.
    """

    denoiser: Denoiser
    schedule: RespacedSchedule
    classifier: Callable[[torch.Tensor], torch.Tensor]
    psi: Callable[[torch.Tensor], torch.Tensor] | None = None


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1.0) / 2.0


def guidance_loss(
    x0: torch.Tensor,
    original: torch.Tensor,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    psi: Callable[[torch.Tensor], torch.Tensor] | None,
    settings: GuidanceSettings,
    psi_original: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample ``lambda_c CE(f(x0), target) + lambda_p ||psi(x0) - psi(x_orig)||^2`` (B,)."""
    logits = classifier(to_unit(x0))
    target = torch.full((len(x0),), settings.target_class, dtype=torch.long, device=x0.device)
    loss = settings.lambda_c * F.cross_entropy(logits, target, reduction="none")
    if psi is not None and settings.lambda_p:
        reference = psi(to_unit(original)) if psi_original is None else psi_original
        loss = loss + settings.lambda_p * (psi(to_unit(x0)) - reference).pow(2).flatten(1).sum(1)
    return loss


def guided_pass(
    x: torch.Tensor,
    original: torch.Tensor,
    sampler: Sampler,
    settings: GuidanceSettings,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One guided pass: noise ``x`` to ``tau`` and denoise with guidance.

    Args:
        x: the pass's input in [-1, 1] (the original for the first pass, the last output after).
        original: the original images (proximity target).
        sampler: denoiser, re-spaced chain, frozen classifier and ``psi``.
        settings: tau, lambdas, target class, gradient mode.
        generator: random generator (forward noise and the per-step noise).

    Returns:
        the counterfactual in [-1, 1].
    """
    denoiser, schedule, classifier, psi = sampler.denoiser, sampler.schedule, sampler.classifier, sampler.psi
    tau = settings.tau
    if not 0 <= tau < len(schedule):
        raise ValueError(f"tau {tau} must be a kept step in [0, {len(schedule) - 1}]")

    def noise_like(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype)

    step = schedule.timesteps[tau]
    z = schedule.schedule.q_sample(x, step, noise_like(x))
    with torch.no_grad():
        psi_original = psi(to_unit(original)) if psi is not None and settings.lambda_p else None
    for i in range(tau, -1, -1):
        t = torch.full((len(z),), int(schedule.timesteps[i]), device=z.device, dtype=torch.long)
        variance = schedule.sigma(i) ** 2
        if settings.gradient == "x_t":
            z_in = z.detach().requires_grad_(True)
            x0 = schedule.predict_x0(z_in, denoiser(z_in, t), i, settings.clip)
            loss = guidance_loss(x0, original, classifier, psi, settings, psi_original).sum()
            (grad,) = torch.autograd.grad(loss, z_in)
            mean = schedule.posterior_mean(z_in, x0, i).detach()
        else:
            with torch.no_grad():
                x0 = schedule.predict_x0(z, denoiser(z, t), i, settings.clip)
                mean = schedule.posterior_mean(z, x0, i)
            x0_leaf = x0.detach().requires_grad_(True)
            loss = guidance_loss(x0_leaf, original, classifier, psi, settings, psi_original).sum()
            (grad,) = torch.autograd.grad(loss, x0_leaf)
        z = mean - variance * grad
        if i > 0:
            z = z + schedule.sigma(i) * noise_like(z)
        z = z.detach()
    return z.clamp(-1.0, 1.0)


def diff_ice(
    original: torch.Tensor,
    sampler: Sampler,
    settings: GuidanceSettings,
    iterations: int,
    generator: torch.Generator | None = None,
    on_iteration: Callable[[int, torch.Tensor], None] | None = None,
) -> list[torch.Tensor]:
    """``iterations`` chained guided passes; returns the output of each (proximity to ``original``).

    Args:
        original: images in [-1, 1].
        sampler: see :func:`guided_pass`.
        settings: pass settings.
        iterations: ``L`` (1 = Diff-ICE_1).
        generator: random generator.
        on_iteration: called as ``(l, output)`` after each pass (1-based ``l``).

    Returns:
        the L outputs, in order.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    outputs, x = [], original
    for level in range(1, iterations + 1):
        x = guided_pass(x, original, sampler, settings, generator)
        outputs.append(x)
        if on_iteration is not None:
            on_iteration(level, x)
    return outputs


@dataclass
class SearchResult:
    """Outcome of the ``lambda_c`` search.

    Attributes:
        outputs: per iteration, the counterfactuals of all samples (B, ...).
        lambda_used: per sample, the ``lambda_c`` whose result is kept.
        flipped: per sample, whether the final counterfactual is classified as the target.
        runs: per ``lambda_c``, the indices of the samples that were (re-)run with it.
    """

    outputs: list[torch.Tensor]
    lambda_used: torch.Tensor
    flipped: torch.Tensor
    runs: dict[float, list[int]] = field(default_factory=dict)


def search_lambda(
    original: torch.Tensor,
    run: Callable[[torch.Tensor, float], list[torch.Tensor]],
    is_flipped: Callable[[torch.Tensor], torch.Tensor],
    lambdas: Sequence[float] = (40.0, 60.0, 80.0),
) -> SearchResult:
    """Try each ``lambda_c`` in turn on the samples that have not flipped yet.

    A sample keeps the result of the first ``lambda_c`` that flips it; samples that never flip keep
    the result of the last ``lambda_c``.

    Args:
        original: the inputs (B, ...).
        run: ``run(subset, lambda_c) -> list of per-iteration outputs`` for a subset of the inputs.
        is_flipped: ``is_flipped(images) -> (B,) bool``.
        lambdas: the values to try, in order.

    Returns:
        a :class:`SearchResult`.
    """
    if not lambdas:
        raise ValueError("give at least one lambda_c")
    pending = list(range(len(original)))
    outputs: list[torch.Tensor] | None = None
    lambda_used = torch.full((len(original),), float("nan"))
    flipped = torch.zeros(len(original), dtype=torch.bool)
    runs: dict[float, list[int]] = {}
    for value in lambdas:
        if not pending:
            break
        runs[float(value)] = list(pending)
        index = torch.tensor(pending, dtype=torch.long)
        results = run(original[index], float(value))
        if outputs is None:
            outputs = [torch.empty((len(original), *r.shape[1:]), dtype=r.dtype, device=r.device) for r in results]
        for level, result in enumerate(results):
            outputs[level][index.to(result.device)] = result
        lambda_used[index] = float(value)
        now = is_flipped(results[-1]).cpu()
        flipped[index] = now
        pending = [p for p, f in zip(pending, now.tolist(), strict=True) if not f]
    return SearchResult(outputs=outputs or [], lambda_used=lambda_used, flipped=flipped, runs=runs)
