"""Evaluation: the main job's report, NT measurement and fidelity, robustness metrics, statistics.

Modules (import names from them; the package itself exports nothing):

- ``agreement``: NT agreement as clinicians read it: Bland-Altman bias and 95 % limits of agreement, beside human
  repeatability.
- ``fidelity``: NT measurement fidelity: whether the NT is still measurable on a reconstruction, and how close it is.
- ``localization``: How well the NT localiser finds the box: IoU, centre error in mm, and "NT visible" on NT and NT-free
  views.
- ``nt_measure``: Nuchal translucency thickness from an intensity profile across the band.
- ``report``: Evaluate the best phase-1 and phase-2 checkpoints and write the report (SPEC 5).
- ``robustness``: Evaluation beyond the per-image metrics (SPEC 5): ROI jitter robustness.
- ``savers``: Ignite handlers that collect an evaluator's per-image outputs (reconstruction metrics, NT fidelity) and
  write them.
- ``statistics``: Statistics for the evaluation report (SPEC 5): bootstrap intervals, paired tests, seed spread.
- ``zoom_floor``: How much NT measurement fidelity the ROI-zoom view itself allows, and how sharp a reconstruction must
  be.
"""
