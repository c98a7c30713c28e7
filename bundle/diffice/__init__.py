"""Diff-ICE: diffusion-based iterative counterfactual explanations for NT plane quality (SPEC 7).

Modules: :mod:`~bundle.diffice.data` (items, structure classes, resizing), :mod:`~bundle.diffice.networks`
(segmentation guide, SonoNet-16, oracle, feature network, DDPM UNet), :mod:`~bundle.diffice.schedule`
(noise schedule and re-spaced sampler), :mod:`~bundle.diffice.counterfactual` (guided passes,
iterations, lambda search), :mod:`~bundle.diffice.metrics` and :mod:`~bundle.diffice.report`.
Configs: ``configs/diffice/``; docs: ``docs/diffice.md``.
"""
