"""Diff-ICE sampler and guidance on toys whose answers are known (seconds, CPU)."""

from __future__ import annotations

import math

import bundle.diffice.counterfactual as cf
import pytest
import torch
from bundle.diffice.counterfactual import GuidanceSettings, Sampler, diff_ice, guided_pass, search_lambda
from bundle.diffice.schedule import NoiseSchedule
from torch import nn

MU, STD = 0.2, 0.3  # the toy data: every pixel ~ N(MU, STD^2)


def gaussian_denoiser(schedule: NoiseSchedule):
    """The exact eps-predictor E[eps | x_t] for N(MU, STD^2) data."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alphas_cumprod[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return (1 - abar).sqrt() * (x - abar.sqrt() * MU) / (abar * STD**2 + 1 - abar)

    return denoise


def sample(schedule: NoiseSchedule, steps: int, n: int = 20000, seed: int = 0) -> torch.Tensor:
    """Ancestral sampling from pure noise through the re-spaced chain (no clipping)."""
    respaced = schedule.respaced(steps)
    denoise = gaussian_denoiser(schedule)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    for i in range(len(respaced) - 1, -1, -1):
        t = torch.full((n,), int(respaced.timesteps[i]))
        x = respaced.step(x, denoise(x, t), i, torch.randn(x.shape, generator=g, dtype=torch.float64), clip=False)
    return x


def exact_marginal(schedule: NoiseSchedule, steps: int) -> tuple[float, float]:
    """Mean and std of the re-spaced chain's output, propagated exactly (each step is affine + noise)."""
    respaced = schedule.respaced(steps)
    denoise = gaussian_denoiser(schedule)
    mean, var = 0.0, 1.0
    for i in range(len(respaced) - 1, -1, -1):
        t = torch.full((2,), int(respaced.timesteps[i]))
        x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        f = respaced.step(x, denoise(x, t), i, None, clip=False)
        a, b = float(f[1] - f[0]), float(f[0])
        mean, var = a * mean + b, a * a * var + respaced.sigma(i) ** 2
    return mean, math.sqrt(var)


def test_respaced_chain_matches_the_full_chain_on_a_gaussian_toy():
    schedule = NoiseSchedule(1000)
    full = sample(schedule, 1000)
    assert abs(float(full.std()) - STD) < 0.01 and abs(float(full.mean()) - MU) < 0.01
    paper = sample(schedule, 400, seed=1)  # the paper's N
    assert abs(float(paper.std()) - float(full.std())) < 0.02 and abs(float(paper.mean()) - MU) < 0.01


@pytest.mark.parametrize("steps", [50, 20])
def test_short_chains_follow_their_exact_marginal(steps):
    """Few steps with the fixed-small variance shrink the spread (0.30 -> ~0.21 at N = 20): a property of
    the variance choice, computed exactly here, that the sampler must reproduce (not a sampler bug)."""
    schedule = NoiseSchedule(1000)
    mean, std = exact_marginal(schedule, steps)
    drawn = sample(schedule, steps, seed=2)
    assert abs(float(drawn.std()) - std) < 0.01 and abs(float(drawn.mean()) - mean) < 0.01
    assert abs(mean - MU) < 0.01


def test_kept_steps_and_the_last_step():
    respaced = NoiseSchedule(1000).respaced(400)
    assert respaced.timesteps[0] == 0 and respaced.timesteps[-1] == 999 and len(respaced) == 400
    assert respaced.timesteps[120] == round(120 * 999 / 399)
    assert respaced.sigma(0) == 0.0  # the last step is the posterior mean, x0_hat
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.allclose(respaced.posterior_mean(torch.randn_like(x0), x0, 0), x0, atol=1e-6)


def test_monai_set_timesteps_steps_back_one_original_step():
    """Why the bundle has its own sampler: monai 1.6.1's DDPMScheduler.step after set_timesteps(50).

    ``step`` takes ``alphas_cumprod[t - 1]`` as the previous value, i.e. it always moves back one
    *original* step, so 50 steps from t = 980 end far from the data distribution.
    """
    from monai.networks.schedulers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=2e-2)
    ours = NoiseSchedule(1000)
    assert torch.allclose(scheduler.alphas_cumprod.double(), ours.alphas_cumprod, atol=1e-6)  # same process
    scheduler.set_timesteps(50)
    denoise = gaussian_denoiser(ours)
    torch.manual_seed(0)
    x = torch.randn(20000, 1)
    for t in scheduler.timesteps:
        eps = denoise(x.double(), torch.full((len(x),), int(t))).float()
        x, _ = scheduler.step(eps, int(t), x)
    mean, std = exact_marginal(ours, 50)
    assert abs(float(x.std()) - std) > 0.1  # wrong: still mostly noise
    assert abs(float(sample(ours, 50).std()) - std) < 0.01  # the re-spaced chain is right


class LinearClassifier(nn.Module):
    """Logits (NSP, SP) = (0, w . x - b): brighter images look more 'standard'."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((pixels,), 0.25), requires_grad=False)
        self.b = 0.25 * pixels * 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w - self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 0.6 - 0.8).float()


def test_zero_guidance_equals_the_unguided_respaced_chain():
    schedule = NoiseSchedule(1000)
    respaced = schedule.respaced(20)
    denoise = gaussian_denoiser(schedule)

    def denoise32(x, t):
        return denoise(x.double(), t).float()

    x = _images()
    settings = GuidanceSettings(tau=6, lambda_c=0.0, lambda_p=0.0)
    generator = torch.Generator().manual_seed(3)
    guided = guided_pass(x, x, Sampler(denoise32, respaced, LinearClassifier(64)), settings, generator)
    g = torch.Generator().manual_seed(3)
    z = schedule.q_sample(x, respaced.timesteps[6], torch.randn(x.shape, generator=g))
    for i in range(6, -1, -1):
        eps = denoise32(z, torch.full((len(z),), int(respaced.timesteps[i])))
        noise = torch.randn(z.shape, generator=g) if i > 0 else None
        z = respaced.step(z, eps, i, noise)
    assert torch.allclose(guided, z.clamp(-1, 1), atol=1e-6)


def test_guidance_raises_the_standard_plane_probability():
    schedule = NoiseSchedule(1000)
    respaced = schedule.respaced(20)
    denoise = gaussian_denoiser(schedule)

    def denoise32(x, t):
        return denoise(x.double(), t).float()

    classifier = LinearClassifier(64)
    x = _images(32)

    def p_sp(images: torch.Tensor) -> float:
        return float(torch.softmax(classifier(cf.to_unit(images)), 1)[:, 1].mean())

    results = {}
    for lambda_c in (0.0, 40.0):
        settings = GuidanceSettings(tau=10, lambda_c=lambda_c, lambda_p=0.0)
        results[lambda_c] = p_sp(
            guided_pass(x, x, Sampler(denoise32, respaced, classifier), settings, torch.Generator().manual_seed(0))
        )
    assert results[40.0] > results[0.0] + 0.1


class CountingUNet(nn.Module):
    """A small eps-predictor that counts backward passes through it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.backward_calls = 0
        self.register_full_backward_hook(self._count)

    def _count(self, *args) -> None:
        self.backward_calls += 1

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return 0.1 * self.conv(x)


@pytest.mark.parametrize("gradient, expect_backward", [("x0", False), ("x_t", True)])
def test_efficient_guidance_never_backpropagates_through_the_unet(gradient, expect_backward):
    unet = CountingUNet()
    respaced = NoiseSchedule(1000).respaced(10)
    settings = GuidanceSettings(tau=4, lambda_c=40.0, lambda_p=1.0, gradient=gradient)
    x = _images(4)
    sampler = Sampler(lambda z, t: unet(z, t), respaced, LinearClassifier(64), lambda im: im.flatten(1))
    guided_pass(x, x, sampler, settings, None)
    assert all(p.grad is None for p in unet.parameters())  # never accumulates into the UNet
    assert (unet.backward_calls > 0) == expect_backward


def test_iterations_chain_from_the_previous_output_with_proximity_to_the_original(monkeypatch):
    calls = []

    def fake_pass(x, original, *args, **kwargs):
        calls.append((x, original))
        return x + 1.0

    monkeypatch.setattr(cf, "guided_pass", fake_pass)
    original = torch.zeros(2, 1, 4, 4)
    seen = []
    outputs = diff_ice(original, None, None, 3, on_iteration=lambda level, out: seen.append(level))
    assert [float(o.mean()) for o in outputs] == [1.0, 2.0, 3.0]
    assert calls[0][0] is original and calls[1][0] is outputs[0] and calls[2][0] is outputs[1]
    assert all(c[1] is original for c in calls) and seen == [1, 2, 3]


def test_lambda_search_reruns_only_unflipped_samples():
    thresholds = torch.tensor([40.0, 60.0, 80.0, math.inf, 60.0])  # the lambda_c that flips each sample
    original = torch.arange(5.0).reshape(5, 1)

    def run(subset: torch.Tensor, lambda_c: float) -> list[torch.Tensor]:
        tag = torch.full_like(subset, lambda_c)
        return [tag * 0.5, torch.cat([subset, tag], 1)[:, 1:]]  # two iterations; the last carries lambda_c

    def is_flipped(last: torch.Tensor) -> torch.Tensor:
        # the sample index is not in the output, so look it up through the run order
        return last[:, 0] >= current_thresholds.pop(0)

    current_thresholds: list = []

    def run_and_remember(subset, lambda_c):
        current_thresholds.append(thresholds[subset[:, 0].long()])
        return run(subset, lambda_c)

    result = search_lambda(original, run_and_remember, is_flipped, (40, 60, 80))
    assert result.runs == {40.0: [0, 1, 2, 3, 4], 60.0: [1, 2, 3, 4], 80.0: [2, 3]}
    assert result.lambda_used.tolist() == [40.0, 60.0, 80.0, 80.0, 60.0]
    assert result.flipped.tolist() == [True, True, True, False, True]
    assert result.outputs[-1][:, 0].tolist() == [40.0, 60.0, 80.0, 80.0, 60.0]  # each keeps its own run's output
    assert result.outputs[0][:, 0].tolist() == [20.0, 30.0, 40.0, 40.0, 30.0]
