"""Diff-ICE sampler and guidance on toys whose answers are known (seconds, CPU)."""

from __future__ import annotations

import math

import bundle.diffice.counterfactual as cf
import pytest
import torch
from bundle.diffice.counterfactual import GuidanceSettings, Sampler, guided_pass, search_lambda
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


class FlatProximity:
    """Squared distance of the raw pixels: the proximity interface on a toy."""

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __call__(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (x - reference).pow(2).flatten(1).sum(1)


@pytest.mark.parametrize("gradient, expect_backward", [("x0", False), ("dime", False), ("x_t", True)])
def test_efficient_guidance_never_backpropagates_through_the_unet(gradient, expect_backward):
    unet = CountingUNet()
    respaced = NoiseSchedule(1000).respaced(10)
    settings = GuidanceSettings(tau=4, lambda_c=40.0, lambda_p=1.0, gradient=gradient)
    x = _images(4)
    sampler = Sampler(lambda z, t: unet(z, t), respaced, LinearClassifier(64), FlatProximity())
    guided_pass(x, x, sampler, settings, None)
    assert all(p.grad is None for p in unet.parameters())  # never accumulates into the UNet
    assert (unet.backward_calls > 0) == expect_backward


def test_dime_estimates_x0_with_a_nested_unguided_chain():
    calls = []
    respaced = NoiseSchedule(1000).respaced(10)

    def denoise(z, t):
        calls.append(int(t[0]))
        return torch.zeros_like(z)

    settings = GuidanceSettings(tau=3, lambda_c=1.0, lambda_p=0.0, gradient="dime")
    guided_pass(_images(2), _images(2), Sampler(denoise, respaced, LinearClassifier(64)), settings, None)
    # each outer step i (3, 2, 1, 0) calls the UNet once, then once per step of the chain i .. 0
    assert len(calls) == sum(1 + (i + 1) for i in range(4))


def test_each_iteration_searches_lambda_and_reruns_only_unflipped_inputs_from_the_same_start(monkeypatch):
    calls = []

    def fake_pass(x, original, sampler, settings, generator, start_noise):
        calls.append((x.clone(), original.clone(), settings.lambda_c, start_noise.clone()))
        return x + settings.lambda_c  # the output carries the lambda_c that made it

    monkeypatch.setattr(cf, "guided_pass", fake_pass)
    original = torch.zeros(4, 1, 2, 2)
    original[:, 0, 0, 0] = torch.arange(4.0)  # tag each input
    # an input flips once its output's mean has grown by at least its own threshold
    thresholds = torch.tensor([10.0, 20.0, 1e9, 10.0])

    def is_flipped(images: torch.Tensor) -> torch.Tensor:
        tag = images[:, 0, 0, 1] / 1.0  # the sum of lambdas applied so far, read off an untagged pixel
        index = (images[:, 0, 0, 0] - images[:, 0, 0, 1]).round().long()
        return tag >= thresholds[index]

    result = cf.diff_ice(original, None, GuidanceSettings(tau=1), 2, (10.0, 20.0), is_flipped, torch.Generator())
    # iteration 1: all four with 10; inputs 1 and 2 did not flip and re-run with 20
    lambdas_1 = [c[2] for c in calls[:2]]
    assert lambdas_1 == [10.0, 20.0] and len(calls[0][0]) == 4 and len(calls[1][0]) == 2
    assert torch.equal(calls[1][3], calls[0][3][[1, 2]])  # the re-run reuses the same z_tau
    assert result.searches[0].runs == {10.0: [0, 1, 2, 3], 20.0: [1, 2]}
    assert result.searches[0].lambda_used.tolist() == [10.0, 20.0, 20.0, 10.0]
    # iteration 2 starts from iteration 1's kept outputs, with proximity still to the original
    second = calls[2]
    assert torch.equal(second[0], result.outputs[0]) and torch.equal(second[1], original)
    assert not torch.equal(calls[2][3], calls[0][3])  # a new z_tau per iteration
    assert result.searches[1].runs == {10.0: [0, 1, 2, 3], 20.0: [2]}
    assert result.outputs[1][:, 0, 0, 1].tolist() == [20.0, 30.0, 40.0, 20.0]


def test_lambda_search_reruns_only_unflipped_samples():
    thresholds = torch.tensor([40.0, 60.0, 80.0, math.inf, 60.0])  # the lambda_c that flips each sample
    seen = []

    def run(index: torch.Tensor, lambda_c: float) -> torch.Tensor:
        seen.append(index.tolist())
        return torch.stack([index.float(), torch.full((len(index),), lambda_c)], 1)

    def is_flipped(out: torch.Tensor) -> torch.Tensor:
        return out[:, 1] >= thresholds[out[:, 0].long()]

    result = search_lambda(5, run, is_flipped, (40, 60, 80))
    assert seen == [[0, 1, 2, 3, 4], [1, 2, 3, 4], [2, 3]]
    assert result.runs == {40.0: [0, 1, 2, 3, 4], 60.0: [1, 2, 3, 4], 80.0: [2, 3]}
    assert result.lambda_used.tolist() == [40.0, 60.0, 80.0, 80.0, 60.0]
    assert result.flipped.tolist() == [True, True, True, False, True]
    assert result.output[:, 1].tolist() == [40.0, 60.0, 80.0, 80.0, 60.0]  # each keeps its own run's output


def test_guidance_budget_scales_lambda_to_the_papers_total_push():
    schedule = NoiseSchedule(1000)
    paper = cf.guidance_budget(schedule, 400, 120)
    # the budget is the sum of the guided steps' variances, computed by hand from the chain
    respaced = schedule.respaced(50)
    assert cf.guidance_budget(schedule, 50, 15) == pytest.approx(sum(respaced.sigma(i) ** 2 for i in range(1, 16)))
    scale = cf.guidance_scale(schedule, 50, 15, (64, 64))
    assert scale["budget"] == pytest.approx(paper / cf.guidance_budget(schedule, 50, 15))
    assert scale["size"] == pytest.approx(64 * 64 / (224 * 288))
    assert scale["scale"] == pytest.approx(scale["budget"] * scale["size"])
    # the paper's own chain and size need no scaling
    assert cf.guidance_scale(schedule, 400, 120, (224, 288))["scale"] == pytest.approx(1.0)
    # a scaled lambda gives the same total push: lambda x budget is the paper's
    assert 40.0 * scale["budget"] * cf.guidance_budget(schedule, 50, 15) == pytest.approx(40.0 * paper)
    with pytest.raises(ValueError, match="tau 60"):
        cf.guidance_budget(schedule, 50, 60)
