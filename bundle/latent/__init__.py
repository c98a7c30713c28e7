"""The frozen latent space: latent extraction, OOD scores, the scorer, probes and their figures.

Modules (import names from them; the package itself exports nothing):

- ``figures``: Figures of the probe report: latent embeddings, OOD score histograms, interpolation and perturbation
  strips.
- ``latents``: Latent vectors of a dataset from a frozen encoder, with the ROI error of each reconstruction.
- ``ood``: Out-of-distribution scores on latent vectors (SPEC 6): Mahalanobis, KNN and AUROC.
- ``probes``: Frozen-latent probes (SPEC 6): provenance, OOD detection, ROI-quality probe, and the probe report.
- ``scoring``: Per-image scores for users: OOD distance to the training latents and a predicted ROI quality.
"""
