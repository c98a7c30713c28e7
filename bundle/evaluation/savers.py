"""Ignite handlers that collect an evaluator's per-image outputs (reconstruction metrics, NT fidelity) and write them.

``run evaluating`` (``configs/evaluate.json``) attaches them with an output folder; the main job's
report (:func:`bundle.evaluation.report.evaluate_network`) attaches them without one and reads
their rows, so both compute every figure the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from bundle.evaluation.fidelity import OriginalNT
from bundle.utils.atomic import atomic_write_json
from bundle.utils.distributed import is_rank0
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class _EvaluationRowsSaver:
    """Base of the evaluation savers: rows collected per iteration, written at completion.

    Subclasses implement ``batch_rows(preds, batch)`` and ``write(engine)``.

    Args:
        output_dir: folder of the outputs; None collects the rows without writing.
    """

    def __init__(self, output_dir: str | os.PathLike | None = None) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Collect after every iteration, write at completion."""
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        if self.output_dir is not None:
            engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        """Add the current batch's rows (computed on the CPU in float32, whatever the device)."""
        self.rows += self.batch_rows(engine.state.output["pred"].detach().float().cpu(), engine.state.batch)

    def batch_rows(self, preds: torch.Tensor, batch: dict) -> list[dict]:
        """The rows of one batch (``decollate=False`` output)."""
        raise NotImplementedError

    def write(self, engine: Engine) -> None:
        """Write the outputs."""
        raise NotImplementedError


class PerImageMetricsSaver(_EvaluationRowsSaver):
    """Collect every reconstruction metric per image during evaluation; write CSVs and a summary.

    Attach to an evaluator run with ``decollate=False``. At completion writes, atomically,
    ``output_dir/per_image.csv``, ``output_dir/per_site.csv`` (means per site) and
    ``output_dir/summary.json`` (means per site and overall).

    Args:
        output_dir: folder of the outputs.
    """

    def batch_rows(self, preds: torch.Tensor, batch: dict) -> list[dict]:
        """Every metric of every image of the batch."""
        from bundle.evaluation.report import per_image_rows

        return per_image_rows(preds, batch)

    def write(self, engine: Engine) -> None:
        """Write the files (rank 0)."""
        from bundle.evaluation.report import ALL_METRICS
        from bundle.utils.atomic import atomic_write_csv

        if not is_rank0() or not self.rows:
            return
        atomic_write_csv(self.output_dir / "per_image.csv", self.rows, ["case_id", "site", "roi_area_px", *ALL_METRICS])
        sites = sorted({r["site"] for r in self.rows})
        summary = {
            "all": {m: sum(r[m] for r in self.rows) / len(self.rows) for m in ALL_METRICS} | {"n": len(self.rows)}
        }
        for site in sites:
            rows = [r for r in self.rows if r["site"] == site]
            summary[f"site{site}"] = {m: sum(r[m] for r in rows) / len(rows) for m in ALL_METRICS} | {"n": len(rows)}
        table = [{"group": group, **values} for group, values in summary.items()]
        atomic_write_csv(self.output_dir / "per_site.csv", table, ["group", "n", *ALL_METRICS])
        atomic_write_json(self.output_dir / "summary.json", summary)
        logger.info(f"evaluation of {len(self.rows)} images written to {self.output_dir} (per_image.csv, per_site.csv)")


class NTFidelitySaver(_EvaluationRowsSaver):
    """Measure the NT on every original and reconstruction during evaluation; write ``fidelity.csv`` and a summary.

    Attach to an evaluator run with ``decollate=False`` over letterboxed items (``case_id`` and
    geometries kept). Each reconstruction is mapped back to native geometry and the NT measured in
    the native box on it and on the original (:mod:`bundle.evaluation.fidelity`, as the training
    report does). At completion writes, atomically, ``output_dir/fidelity.csv`` (one row per
    image) and ``output_dir/fidelity.json`` (standard and all planes: share measurable, median
    and p90 of |NT(recon) - NT(original)|, share within 0.2 mm, bias, MAE against the exact NT),
    and the Bland-Altman agreement per site on standard planes beside the null baselines and the
    human anchors (:mod:`bundle.evaluation.agreement`): ``agreement.json``, ``agreement.md`` and
    ``bland_altman.png``.

    Args:
        output_dir: folder of the outputs (None: collect only).
        entries: the evaluated datalist entries (``case_id``, ``image``, ``roi``,
            ``pixel_spacing_mm``); entries without a spacing are skipped (the NT is in mm).
        constant_nt_mm: the constant-NT null baseline (the training originals' median,
            :func:`bundle.evaluation.report.constant_nt`); None leaves it out.
        originals: the NT measured on each original (:class:`~bundle.evaluation.fidelity.OriginalNT`),
            shared by evaluations of the same images so each is read once; None: a new one.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        entries: list[dict] | Mapping[str, dict] = (),
        constant_nt_mm: float | None = None,
        originals: OriginalNT | None = None,
    ) -> None:
        super().__init__(output_dir)
        self.entries = dict(entries) if isinstance(entries, Mapping) else {e["case_id"]: e for e in entries}
        self.constant_nt_mm = constant_nt_mm
        self.originals = originals if originals is not None else OriginalNT()

    def batch_rows(self, preds: torch.Tensor, batch: dict) -> list[dict]:
        """The NT measurements of the batch's images."""
        from bundle.evaluation.report import batch_fidelity_rows

        return batch_fidelity_rows(preds, batch, self.entries, self.originals)

    def write(self, engine: Engine) -> None:
        """Write the files (rank 0)."""
        from bundle.evaluation.fidelity import fidelity_by_plane
        from bundle.evaluation.report import FIDELITY_COLUMNS
        from bundle.utils.atomic import atomic_write_csv

        if not is_rank0() or not self.rows:
            return
        atomic_write_csv(self.output_dir / "fidelity.csv", self.rows, list(FIDELITY_COLUMNS))
        summary = fidelity_by_plane(self.rows)
        atomic_write_json(self.output_dir / "fidelity.json", summary)
        self.write_agreement()
        standard = summary["standard_planes"]
        logger.info(
            f"NT fidelity of {len(self.rows)} images written to {self.output_dir} (fidelity.csv, fidelity.json); "
            f"standard planes: measurable {standard['measurable_pct']:.0f} %, "
            f"median {standard['abs_diff_median_mm']:.3f} mm, p90 {standard['abs_diff_p90_mm']:.3f} mm, "
            f"bias {standard['bias_mm']:+.3f} mm"
        )

    def write_agreement(self) -> None:
        """Bland-Altman per site on standard planes with the null baselines: JSON, Markdown and the figure."""
        from bundle.evaluation.agreement import agreement_markdown, agreement_rows, bland_altman_figure
        from bundle.evaluation.fidelity import is_standard_plane
        from bundle.utils.atomic import atomic_write_text

        standard = {"model": [r for r in self.rows if is_standard_plane(r)]}
        rows = agreement_rows(standard, self.constant_nt_mm)
        atomic_write_json(self.output_dir / "agreement.json", {"constant_nt_mm": self.constant_nt_mm, "rows": rows})
        lines = ["# NT agreement (Bland-Altman), standard planes", "", *agreement_markdown(rows, str), ""]
        atomic_write_text(self.output_dir / "agreement.md", "\n".join(lines))
        bland_altman_figure(standard, self.constant_nt_mm, self.output_dir / "bland_altman.png")
