"""NT agreement as clinicians read it: Bland-Altman bias and 95 % limits of agreement, beside human repeatability.

Bland & Altman (Lancet 1986): for paired measurements ``a`` (here NT on the reconstruction) and ``b``
(NT on the original), ``d = a - b``; the bias is ``mean(d)`` and the 95 % limits of agreement are
``bias +- 1.96 SD(d)``. Two null baselines are computed the same way on the same originals, so a
reader can see what agreement needs no model at all:

- **constant NT**: every image gets the same NT, the median of the training originals;
- **shuffled pairs**: each original is paired with the reconstruction NT of another image of the
  same site (a fixed permutation), i.e. the right distribution with no image-specific information.

Human anchors (what a model's limits are read against): Pandya et al. 1995 (200 women): 95 % of
repeat measurements agree within 0.54 mm for one observer and 0.62 mm between observers;
Moratalla et al. 2010: within-operator SD 0.126 mm by hand, 0.05 mm semi-automated (95 %
repeatability ``1.96 * sqrt(2) * SD``: 0.35 mm and 0.14 mm, computed here from the stated SDs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

LOA_TARGET_MM = 0.54  # Pandya 1995, one observer: 95 % of repeat measurements within this
#: published human repeatability: (label, 95 % limit in mm, how the figure was obtained)
HUMAN_ANCHORS = (
    ("Pandya 1995, same observer (200 women)", 0.54, "95 % of repeats within"),
    ("Pandya 1995, two observers", 0.62, "95 % of repeats within"),
    ("Moratalla 2010, by hand (SD 0.126 mm)", 1.96 * math.sqrt(2) * 0.126, "1.96 x sqrt(2) x SD"),
    ("Moratalla 2010, semi-automated (SD 0.05 mm)", 1.96 * math.sqrt(2) * 0.05, "1.96 x sqrt(2) x SD"),
)


def bland_altman(measured: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Bias, SD and 95 % limits of agreement of ``measured - reference`` (pairs with a missing value are dropped).

    Returns:
        ``n``, ``bias_mm``, ``sd_mm``, ``loa_low_mm``, ``loa_high_mm``, ``abs_median_mm`` and
        ``within_0.54mm_pct`` (share of pairs within the Pandya limit); NaN where fewer than 2 pairs.
    """
    pairs = [(a, b) for a, b in zip(measured, reference, strict=True) if a is not None and b is not None]
    d = np.array([float(a) - float(b) for a, b in pairs], dtype=np.float64)
    nan = float("nan")
    if d.size < 2:
        return dict.fromkeys(("bias_mm", "sd_mm", "loa_low_mm", "loa_high_mm", "abs_median_mm"), nan) | {
            "n": int(d.size),
            "within_0.54mm_pct": nan,
        }
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return {
        "n": int(d.size),
        "bias_mm": bias,
        "sd_mm": sd,
        "loa_low_mm": bias - 1.96 * sd,
        "loa_high_mm": bias + 1.96 * sd,
        "abs_median_mm": float(np.median(np.abs(d))),
        "within_0.54mm_pct": 100.0 * float(np.mean(np.abs(d) <= LOA_TARGET_MM)),
    }


def inside_target(summary: Mapping[str, float], limit: float = LOA_TARGET_MM) -> bool:
    """Whether both limits of agreement lie inside ``+-limit`` mm."""
    return bool(-limit <= summary["loa_low_mm"] and summary["loa_high_mm"] <= limit)


def shuffled_within_site(rows: Sequence[Mapping], key: str = "nt_recon_mm", seed: int = 0) -> list[float | None]:
    """``key`` of each row replaced by that of another row of the same site (one seeded permutation per site)."""
    rng = np.random.default_rng(seed)
    out: list[float | None] = [None] * len(rows)
    for site in sorted({int(r["site"]) for r in rows}):
        index = [i for i, r in enumerate(rows) if int(r["site"]) == site]
        for i, j in zip(index, rng.permutation(index), strict=True):
            out[i] = rows[int(j)][key]
    return out


def agreement_rows(
    methods: Mapping[str, Sequence[Mapping]], constant_nt_mm: float | Mapping[int, float] | None, seed: int = 0
) -> list[dict]:
    """Bland-Altman per site (and over all sites) for each method and the two null baselines.

    Args:
        methods: method name -> fidelity rows (``site``, ``nt_original_mm``, ``nt_recon_mm``); the first
            method's rows also feed the null baselines.
        constant_nt_mm: the constant NT baseline (the training originals' median), or one per site (each
            rotation of the protocol has its own training images); None leaves it out.
        seed: the shuffled-pairs permutation.

    Returns:
        one dict per (method, site) with ``method``, ``site`` (``"all"`` for the pooled row) and the
        :func:`bland_altman` figures.
    """
    out = []
    first = next(iter(methods.values()), [])
    nulls: dict[str, list[float | None]] = {"shuffled pairs (null)": shuffled_within_site(first, seed=seed)}
    if constant_nt_mm is not None:
        if isinstance(constant_nt_mm, Mapping):
            constants = [constant_nt_mm.get(int(r["site"])) for r in first]
        else:
            constants = [constant_nt_mm] * len(first)
        nulls = {"constant NT (null)": constants, **nulls}
    columns = {name: ([r["nt_recon_mm"] for r in rows], rows) for name, rows in methods.items()}
    columns.update({name: (values, first) for name, values in nulls.items()})
    for name, (values, rows) in columns.items():
        sites = sorted({int(r["site"]) for r in rows})
        for site in [*sites, "all"] if len(sites) > 1 else sites:
            keep = [i for i, r in enumerate(rows) if site == "all" or int(r["site"]) == site]
            figures = bland_altman([values[i] for i in keep], [rows[i]["nt_original_mm"] for i in keep])
            out.append({"method": name, "site": site, **figures})
    return out


def agreement_markdown(rows: Sequence[Mapping], site_label=str) -> list[str]:
    """Markdown lines: the Bland-Altman table of :func:`agreement_rows` and the human anchors under it."""
    lines = [
        "| method | site | n | bias | 95 % limits of agreement | median abs diff | within 0.54 mm | "
        "limits inside +-0.54 mm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["n"] or math.isnan(r["bias_mm"]):
            continue
        lines.append(
            f"| {r['method']} | {site_label(r['site'])} | {r['n']} | {r['bias_mm']:+.3f} mm | "
            f"{r['loa_low_mm']:+.3f} to {r['loa_high_mm']:+.3f} mm | {r['abs_median_mm']:.3f} mm | "
            f"{r['within_0.54mm_pct']:.1f} % | {'yes' if inside_target(r) else 'no'} |"
        )
    lines += ["", "Human repeatability of the NT measurement (what the limits above are read against):", ""]
    lines += [f"- {label}: +-{limit:.2f} mm ({how})" for label, limit, how in HUMAN_ANCHORS]
    return lines


def bland_altman_figure(methods: Mapping[str, Sequence[Mapping]], constant_nt_mm: float | None, path) -> None:
    """Bland-Altman plots (mean of the pair vs difference), one panel per method plus the constant-NT null.

    Each panel shows the bias, the 95 % limits of agreement and the +-0.54 mm human band (Pandya 1995).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bundle.utils.atomic import atomic_path

    panels = {name: [(r["nt_recon_mm"], r["nt_original_mm"]) for r in rows] for name, rows in methods.items()}
    first = next(iter(methods.values()), [])
    if constant_nt_mm is not None:
        panels["constant NT (null)"] = [(constant_nt_mm, r["nt_original_mm"]) for r in first]
    panels = {k: [(a, b) for a, b in v if a is not None and b is not None] for k, v in panels.items()}
    panels = {k: v for k, v in panels.items() if len(v) >= 2}
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, (name, pairs) in zip(axes[0], panels.items(), strict=True):
        a, b = np.array(pairs).T
        figures = bland_altman(a, b)
        ax.axhspan(-LOA_TARGET_MM, LOA_TARGET_MM, color="tab:green", alpha=0.12, label="+-0.54 mm (Pandya 1995)")
        ax.scatter(0.5 * (a + b), a - b, s=8, alpha=0.7)
        ax.axhline(figures["bias_mm"], color="k", lw=1, label=f"bias {figures['bias_mm']:+.3f} mm")
        for key in ("loa_low_mm", "loa_high_mm"):
            ax.axhline(figures[key], color="tab:red", lw=1, ls="--")
        ax.set_title(f"{name}\nLoA {figures['loa_low_mm']:+.2f} to {figures['loa_high_mm']:+.2f} mm", fontsize=8)
        ax.set_xlabel("mean of NT(reconstruction) and NT(original), mm", fontsize=7)
        ax.legend(fontsize=6, loc="upper left")
    axes[0, 0].set_ylabel("NT(reconstruction) - NT(original), mm", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
