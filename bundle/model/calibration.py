"""Gradient calibration of the phase-2 loss weights (SPEC 4).

Once, at the start of phase 2 and with the phase-1 weights: for each term k, ``g_k`` is the mean
over N training batches of the L2 norm of ``dL_k / dtheta`` over the shared trainable parameters,
with no update; then ``w_k = mean_j(g_j) / (g_k + eps)``, so every term pushes the parameters
equally hard on average. The weights are then fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def gradient_norm(loss: torch.Tensor, parameters: list[torch.Tensor]) -> float:
    """L2 norm of ``d loss / d parameters`` (parameters the loss does not reach count as zero)."""
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    squares = [g.pow(2).sum() for g in grads if g is not None]
    return float(torch.sqrt(torch.stack(squares).sum())) if squares else 0.0


def calibrate_loss_weights(
    term_losses: Callable[[object], dict[str, torch.Tensor]],
    parameters: Iterable[torch.Tensor],
    batches: Iterable[object],
    eps: float = 1e-12,
) -> tuple[dict[str, float], dict[str, float]]:
    """Compute calibrated loss weights from per-term gradient magnitudes.

    Args:
        term_losses: maps a batch to ``{term: scalar loss}`` (one forward pass for all terms).
        parameters: the shared trainable parameters.
        batches: the calibration batches (e.g. the first N training batches).
        eps: keeps a term with zero gradient finite.

    Returns:
        ``(weights, mean_gradient_norms)``, both keyed by term.

    Raises:
        ValueError: when there are no batches or no trainable parameters.
    """
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("gradient calibration needs trainable parameters; check the freeze setting")
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        for name, loss in term_losses(batch).items():
            sums[name] = sums.get(name, 0.0) + gradient_norm(loss, params)
        count += 1
    if count == 0:
        raise ValueError("gradient calibration needs at least one batch")
    norms = {name: total / count for name, total in sums.items()}
    return weights_from_gradient_norms(norms, eps), norms


def weights_from_gradient_norms(norms: dict[str, float], eps: float = 1e-12) -> dict[str, float]:
    """``w_k = mean_j(g_j) / (g_k + eps)`` from mean gradient norms ``g_k``."""
    mean_norm = sum(norms.values()) / len(norms)
    return {name: mean_norm / (g + eps) for name, g in norms.items()}
