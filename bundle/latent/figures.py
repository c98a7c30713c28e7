"""Figures of the probe report: latent embeddings, OOD score histograms, interpolation and perturbation strips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from bundle.model.batches import network_input
from bundle.utils.atomic import atomic_path
from torch import nn

logger = logging.getLogger("fetal_nt_roi_cae")

SPLIT_MARKERS = {"train": "o", "val": "^", "held_out": "x"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _pyplot().close(fig)


def _embed(method: str, tables: dict, seed: int) -> dict[str, np.ndarray]:
    """2-D coordinates of every split, the projection fitted on the training latents."""
    train = tables["train"]["z"]
    if method == "pca":
        from sklearn.decomposition import PCA

        projection = PCA(n_components=2, random_state=seed).fit(train)
    else:
        import umap

        projection = umap.UMAP(n_components=2, random_state=seed, n_neighbors=15).fit(train)
    return {split: projection.transform(t["z"]) for split, t in tables.items()}


def embedding_figure(by_phase: dict, path: Path, method: str, site_names: dict[int, str], seed: int = 0) -> None:
    """Latents in 2-D (PCA or UMAP), one panel per phase, colour = site, marker = split."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(by_phase), figsize=(5.2 * len(by_phase), 4.6), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (phase, (_, tables, _)) in zip(axes[0], by_phase.items(), strict=True):
        coords = _embed(method, tables, seed)
        for split, xy in coords.items():
            for site in np.unique(tables[split]["site"]):
                keep = tables[split]["site"] == site
                ax.scatter(
                    xy[keep, 0],
                    xy[keep, 1],
                    s=12,
                    marker=SPLIT_MARKERS.get(split, "o"),
                    color=colours(int(site) % 10),
                    alpha=0.7,
                    label=f"{site_names.get(int(site), f'site {site}')} ({split})",
                )
        ax.set_title(f"{phase}: {method.upper()} of the latents (fitted on training latents)", fontsize=9)
        ax.legend(fontsize=7, markerscale=1.2)
    fig.tight_layout()
    _save(fig, path)


def ood_histogram_figure(by_phase: dict, path: Path) -> None:
    """Mahalanobis and KNN (k = 5) scores of source validation vs held-out images, per phase."""
    plt = _pyplot()
    names = [n for n in ("mahalanobis", "knn_k5") if n in next(iter(by_phase.values()))[2]]
    fig, axes = plt.subplots(len(by_phase), len(names), figsize=(4.6 * len(names), 3.0 * len(by_phase)), squeeze=False)
    for row, (phase, (_, _, scores)) in enumerate(by_phase.items()):
        for col, name in enumerate(names):
            ax = axes[row, col]
            both = np.concatenate([scores[name]["val"], scores[name]["held_out"]])
            bins = np.linspace(both.min(), both.max(), 30)
            ax.hist(scores[name]["val"], bins=bins, alpha=0.6, label="source validation")
            ax.hist(scores[name]["held_out"], bins=bins, alpha=0.6, label="held-out site")
            ax.set_title(f"{phase}: {name}", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _first_image(loader, network) -> tuple[torch.Tensor, str]:
    """The network input of the loader's first image (the view mosaic of a dual-view model) and its case id."""
    batch = next(iter(loader))
    return network_input(network, batch)[:1], str(batch["case_id"][0])


@torch.no_grad()
def strip_figure(by_phase: dict, loaders: dict, path: Path, device, steps: int) -> None:
    """Decoded latent interpolation from a source-validation image to a held-out image, per phase."""
    plt = _pyplot()
    network = next(iter(by_phase.values()))[0]
    (a, name_a), (b, name_b) = _first_image(loaders["val"], network), _first_image(loaders["held_out"], network)
    weights = np.linspace(0.0, 1.0, steps)
    fig, axes = plt.subplots(len(by_phase), steps + 2, figsize=(1.7 * (steps + 2), 1.9 * len(by_phase)), squeeze=False)
    for row, (phase, (network, _, _)) in enumerate(by_phase.items()):
        za, zb = network.encode(a.to(device)), network.encode(b.to(device))
        decoded = network.decode(torch.cat([(1 - float(w)) * za + float(w) * zb for w in weights])).cpu()
        panels = [(a[0, 0], f"{name_a}")] + [(decoded[i, 0], f"t={w:.2f}") for i, w in enumerate(weights)]
        panels.append((b[0, 0], f"{name_b}"))
        for col, (image, title) in enumerate(panels):
            axes[row, col].imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(title, fontsize=6)
            axes[row, col].axis("off")
        axes[row, 0].text(-0.1, 0.5, phase, transform=axes[row, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


@torch.no_grad()
def perturbation_figure(by_phase: dict, loaders: dict, path: Path, device, sigmas: list[float], seed: int) -> None:
    """Decoded ``z + sigma * eps * std(z)`` for a source-validation image (std over training latents)."""
    plt = _pyplot()
    image, name = _first_image(loaders["val"], next(iter(by_phase.values()))[0])
    fig, axes = plt.subplots(
        len(by_phase), len(sigmas) + 1, figsize=(1.9 * (len(sigmas) + 1), 2.0 * len(by_phase)), squeeze=False
    )
    for row, (phase, (network, tables, _)) in enumerate(by_phase.items()):
        z = network.encode(image.to(device))
        std = torch.as_tensor(tables["train"]["z"].std(0), dtype=z.dtype, device=device)
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)).to(device)
        decoded = network.decode(torch.cat([z + s * noise * std for s in sigmas])).cpu()
        axes[row, 0].imshow(image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(f"{phase}\n{name}", fontsize=6)
        for col, sigma in enumerate(sigmas, start=1):
            axes[row, col].imshow(decoded[col - 1, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(f"sigma={sigma:g}", fontsize=6)
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def draw_probe_figures(
    by_phase: dict[str, tuple[nn.Module, dict, dict]], loaders: dict, output: Path, device, settings, site_names
) -> None:
    """Every probe figure into ``output`` (UMAP only when ``umap-learn`` is installed and enabled).

    Args:
        by_phase: per phase ``(network, latent tables per split, OOD scores)``.
        loaders: ``train``/``val``/``held_out`` loaders (first items are used for the strips).
        output: report folder.
        device: where the networks are.
        settings: :class:`~bundle.latent.probes.ProbeSettings`.
        site_names: site id -> name.
    """
    embedding_figure(by_phase, output / "embedding_pca.png", "pca", site_names, settings.seed)
    if settings.umap:
        try:
            import umap  # noqa: F401
        except ImportError:
            logger.info("umap-learn is not installed (pip install -e '.[umap]'); skipping the UMAP plot")
        else:
            embedding_figure(by_phase, output / "embedding_umap.png", "umap", site_names, settings.seed)
    ood_histogram_figure(by_phase, output / "ood_scores.png")
    strip_figure(by_phase, loaders, output / "interpolation.png", device, settings.interpolation_steps)
    perturbation_figure(
        by_phase, loaders, output / "perturbation.png", device, settings.perturbation_sigmas, settings.seed
    )
