"""The leave-one-hospital-out protocol, one module per job.

Modules (import names from them; the package itself exports nothing):

- ``probes``: Frozen-latent probes for every rotation of the evaluation protocol (OOD AUROC per held-out site).
- ``runner``: The evaluation protocol (SPEC 5): every leave-one-site-out rotation, several seeds, ablations.
- ``runs``: Protocol runs: train one run in a subprocess, and read back what the finished runs wrote.
- ``studies``: Protocol statistics and studies: pooled phase comparisons, ablations, ROI jitter, NT fidelity.
- ``variants``: The protocol's methods (variants) and settings: which runs exist and how each is configured.
- ``writeup``: The protocol's write-up: ``protocol.md`` tables and the report figures.
"""
