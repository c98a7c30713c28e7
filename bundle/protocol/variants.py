"""The protocol's methods (variants) and settings: which runs exist and how each is configured."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bundle.utils.paths import REPO_ROOT, TRAIN_CONFIG, load_config

MAIN = "roi_cae"
REPORT_METRICS = (
    "psnr",
    "ssim",
    "ms_ssim",
    "roi_mae",
    "roi_psnr",
    "roi_edge_mae",
    "psnr_content",
    "ssim_content",
    "ms_ssim_content",
    "zoom_psnr",
    "zoom_roi_mae",
    "zoom_roi_edge_mae",
    "zoom_roi_blur_px",
)
PAPER_MODEL = "paper_model"


class RunPaths(NamedTuple):
    """Where one protocol run writes: ``output`` (report, probes, markers) and ``models`` (weights)."""

    output: Path
    models: Path


@dataclass(frozen=True)
class Variant:
    """One method of the comparison.

    Args:
        description: what it is, for the report.
        overlays: extra config files after ``configs/train.json``.
        overrides: extra ``--key value`` settings.
        shares_phase1: True when phase 1 is the main method's (only phase 2 differs), so the main
            run's phase-1 model is reused instead of retrained.
        all_rotations: run on every rotation, not only on the ablation sites.
    """

    description: str
    overlays: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict)
    shares_phase1: bool = False
    all_rotations: bool = False


VARIANTS: dict[str, Variant] = {
    MAIN: Variant("dual-view ROI-aware CAE (letterbox + ROI-zoom view), two phases, calibrated weights (the method)"),
    PAPER_MODEL: Variant(
        "the paper's single-view CAE (model: paper), same phases and budget",
        overrides={"model": "paper"},
        all_rotations=True,
    ),
    "phase1_longer": Variant(
        "phase 1 only, trained for the phase-2 budget too (phase 2 uses the phase-1 loss)",
        ("configs/ablations/phase2_global_only.json",),
        shares_phase1=True,
    ),
    "equal_weights": Variant("phase 2 with equal weights", overrides={"loss_weighting": "equal"}, shares_phase1=True),
    "uncertainty": Variant(
        "phase 2 with uncertainty weighting (Kendall et al. 2018)",
        overrides={"loss_weighting": "uncertainty"},
        shares_phase1=True,
    ),
    "freeze_encoder": Variant(
        "phase 2 with a frozen encoder", overrides={"phase2_freeze": "encoder"}, shares_phase1=True
    ),
    "joint": Variant("single stage: ROI terms (equal weights) from the start", ("configs/ablations/joint.json",)),
}


@dataclass
class ProtocolSettings:
    """What the protocol runs.

    Args:
        output_dir: protocol folder (runs and ``report/``).
        dataset_dir: dataset folder.
        generate_synthetic: generate the synthetic dataset in ``dataset_dir`` when it has no datalist
            (the CLI sets it only for its default folder; never over files it did not write).
        sites: held-out sites (one rotation each).
        seeds: training seeds.
        variants: methods to train (``roi_cae`` always included).
        ablation_sites: rotations on which the ablations run.
        phase1_epochs: phase-1 epochs of every run.
        phase2_epochs: phase-2 epochs of every run.
        overrides: further ``--key value`` settings for every run.
    """

    output_dir: Path
    dataset_dir: Path
    sites: list[int]
    seeds: list[int]
    variants: list[str]
    ablation_sites: list[int]
    phase1_epochs: int = 60
    phase2_epochs: int = 30
    overrides: dict = field(default_factory=dict)
    generate_synthetic: bool = False

    def run_dir(self, site: int, seed: int, variant: str) -> Path:
        """Bundle root of one run."""
        return self.output_dir / "runs" / f"heldout{site}_seed{seed}" / variant

    def jobs(self) -> list[tuple[int, int, str]]:
        """(site, seed, variant) in the order they run (the main method first in each rotation)."""
        jobs = []
        for site in self.sites:
            for seed in self.seeds:
                jobs.append((site, seed, MAIN))
                jobs += [
                    (site, seed, v)
                    for v in self.variants
                    if v != MAIN and (site in self.ablation_sites or VARIANTS[v].all_rotations)
                ]
        return jobs

    def overrides_for(self, site: int, seed: int, variant: str) -> dict:
        """Every ``--key value`` of one run."""
        root = self.run_dir(site, seed, variant)
        return {
            "bundle_root": str(root),
            "dataset_dir": str(self.dataset_dir),
            "held_out_site": site,
            "seed": seed,
            "phase1_epochs": self.phase1_epochs,
            "phase2_epochs": self.phase2_epochs,
            "synthetic#generate": self.generate_synthetic,
            **self.overrides,
            **VARIANTS[variant].overrides,
        }

    def config_files(self, variant: str) -> list[str]:
        """Config files of a variant, first to last."""
        return [str(TRAIN_CONFIG), *(str(REPO_ROOT / o) for o in VARIANTS[variant].overlays)]

    def run_paths(self, site: int, seed: int, variant: str) -> RunPaths:
        """Output and models folders of one run, as its training config resolves them.

        They follow the run's settings (``preset``, ``output_dir``, ``models_dir`` in
        :attr:`overrides`), so the protocol finds every file where the run wrote it.
        """
        parser = load_config(self.config_files(variant), self.overrides_for(site, seed, variant))
        return RunPaths(Path(parser.get_parsed_content("output_dir")), Path(parser.get_parsed_content("models_dir")))
