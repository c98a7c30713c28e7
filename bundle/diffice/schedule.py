"""DDPM noise schedule and a re-spaced ancestral sampler (SPEC 7), written out rather than borrowed.

The forward process uses ``T`` steps with linear betas. Sampling with ``N < T`` steps keeps the
original steps ``S_i = round(i (T - 1) / (N - 1))`` and their cumulative products ``abar'_i =
abar_{S_i}``; each kept step gets ``beta'_i = 1 - abar'_i / abar'_{i-1}``, and the network is
called with the *original* step ``S_i``. Why not MONAI's ``DDPMScheduler.set_timesteps``: in
monai 1.6.1 its ``step`` always moves back one *original* step (it reads ``alphas_cumprod[t - 1]``
as the previous value), so after ``set_timesteps(n < T)`` the chain is wrong; the test
``test_monai_set_timesteps_steps_back_one_original_step`` shows it.
"""

from __future__ import annotations

import torch

__all__ = ["NoiseSchedule", "RespacedSchedule"]


class NoiseSchedule:
    """The forward process: ``T`` linear betas from ``beta_start`` to ``beta_end``.

    Args:
        num_steps: ``T``.
        beta_start: first beta.
        beta_end: last beta.
    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> None:
        if num_steps < 2:
            raise ValueError(f"num_steps must be at least 2, got {num_steps}")
        self.num_steps = num_steps
        self.betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean images ``x0`` to step ``t`` (0-based): ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def _abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long()
        abar = self.alphas_cumprod[t].to(device=like.device, dtype=like.dtype)
        return abar.reshape(-1, *([1] * (like.dim() - 1))) if abar.dim() else abar

    def respaced(self, num_inference_steps: int) -> RespacedSchedule:
        """The re-spaced chain with ``num_inference_steps`` kept steps."""
        return RespacedSchedule(self, num_inference_steps)


class RespacedSchedule:
    """``N`` kept steps of a :class:`NoiseSchedule` and the exact posterior between them.

    Args:
        schedule: the forward process.
        num_inference_steps: ``N`` (2 <= N <= T); ``N = T`` is the full chain.
    """

    def __init__(self, schedule: NoiseSchedule, num_inference_steps: int) -> None:
        num_steps = schedule.num_steps
        if not 2 <= num_inference_steps <= num_steps:
            raise ValueError(f"num_inference_steps must be in [2, {num_steps}], got {num_inference_steps}")
        self.schedule = schedule
        n = num_inference_steps
        steps = torch.round(torch.arange(n, dtype=torch.float64) * (num_steps - 1) / (n - 1)).long()
        self.timesteps = steps  # S_0 = 0 < ... < S_{N-1} = num_steps - 1
        self.alphas_cumprod = schedule.alphas_cumprod[steps]
        previous = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.previous_alphas_cumprod = previous
        self.betas = 1.0 - self.alphas_cumprod / previous
        # fixed-small variance: the posterior variance of q(x_{i-1} | x_i, x0)
        self.variances = self.betas * (1.0 - previous) / (1.0 - self.alphas_cumprod)

    def __len__(self) -> int:
        return len(self.timesteps)

    def index_at_or_below(self, step: int) -> int:
        """Index of the last kept step ``S_i <= step`` (where a chain started at original step ``step`` begins)."""
        kept = int((self.timesteps <= step).sum().item()) - 1
        if kept < 0:
            raise ValueError(f"step {step} is below the first kept step")
        return kept

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, i: int, clip: bool = True) -> torch.Tensor:
        """``x0_hat = (x_i - sqrt(1 - abar'_i) eps) / sqrt(abar'_i)``, clipped to [-1, 1] when asked."""
        abar = float(self.alphas_cumprod[i])
        x0 = (x - (1 - abar) ** 0.5 * eps) / abar**0.5
        return x0.clamp(-1.0, 1.0) if clip else x0

    def posterior_mean(self, x: torch.Tensor, x0: torch.Tensor, i: int) -> torch.Tensor:
        """Mean of ``q(x_{i-1} | x_i, x0)`` on the kept steps."""
        abar, abar_prev, beta = (float(v[i]) for v in (self.alphas_cumprod, self.previous_alphas_cumprod, self.betas))
        coef_x0 = abar_prev**0.5 * beta / (1 - abar)
        coef_x = (1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)
        return coef_x0 * x0 + coef_x * x

    def sigma(self, i: int) -> float:
        """Standard deviation of the step from kept index ``i`` (0 at the last step, ``i = 0``)."""
        return float(self.variances[i]) ** 0.5 if i > 0 else 0.0

    def step(
        self, x: torch.Tensor, eps: torch.Tensor, i: int, noise: torch.Tensor | None, clip: bool = True
    ) -> torch.Tensor:
        """One ancestral step from kept index ``i`` to ``i - 1`` given the predicted noise."""
        mean = self.posterior_mean(x, self.predict_x0(x, eps, i, clip), i)
        if i == 0 or noise is None:
            return mean
        return mean + self.sigma(i) * noise
