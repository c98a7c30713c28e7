"""fetal_nt_roi_cae: ROI-aware convolutional autoencoder and Diff-ICE for first-trimester NT ultrasound.

The package holds one module per concept; the bundle configs in ``configs/`` import it.
"""

__version__ = "0.15.0"
