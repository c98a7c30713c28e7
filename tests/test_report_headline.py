"""Issue 32.5: ``metrics.md`` opens with a headline: held-out NT agreement, NT error, PSNR and ROI error vs targets."""

from __future__ import annotations

from bundle.evaluation.report import headline_markdown


def _metrics(loa=(-0.2, 0.3), median=0.08, gain=0.5, change=-8.0) -> dict:
    return {
        "held_out_site": 2,
        "phase2_minus_phase1": {
            "held_out": {
                "psnr": {"absolute": gain, "relative_pct": 3.0},
                "roi_mae": {"absolute": -0.01, "relative_pct": change},
            }
        },
        "nt_agreement": {
            "held_out": [
                {"method": "phase2", "site": 2, "n": 100, "loa_low_mm": loa[0], "loa_high_mm": loa[1]},
                {"method": "constant NT (null)", "site": 2, "n": 100, "loa_low_mm": -2.0, "loa_high_mm": 2.0},
            ]
        },
        "nt_fidelity": {"phase2": {"held_out": {"standard_planes": {"n": 100, "abs_diff_median_mm": median}}}},
    }


def test_headline_judges_each_figure_against_its_target():
    text = headline_markdown(_metrics())
    assert text.startswith("## Headline: the unseen hospital (site 2)")
    assert "-0.200 to +0.300 mm | inside +-0.54 mm | met" in text
    assert "0.080 mm | <= 0.10 mm | met" in text and "+0.50 dB | >= +0.29 dB (paper) | met" in text
    assert "-8.00 % | <= -6.43 % (paper) | met" in text and "missed" not in text
    bad = headline_markdown(_metrics(loa=(-0.7, 0.3), median=0.2, gain=0.1, change=-1.0))
    assert bad.count("**missed**") == 4


def test_no_held_out_split_no_headline():
    assert headline_markdown({"phase2_minus_phase1": {}}) == ""
