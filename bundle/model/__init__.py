"""The model: networks, view mosaics, batch packing for the engines, losses, metrics and gradient calibration.

Modules (import names from them; the package itself exports nothing):

- ``batches``: Glue between the data items and MONAI's engines.
- ``calibration``: Gradient calibration of the phase-2 loss weights (SPEC 4).
- ``localizer``: NT localiser: finds the NT box (and whether an NT is visible at all) in an image that has none.
- ``losses``: Losses of the two training phases (SPEC 4), as ``nn.Module``s whose constructors hold every knob.
- ``metrics``: Reconstruction metrics (SPEC 4, 5): one implementation serves the losses, validation and reports.
- ``network``: ROI-aware convolutional autoencoder (SPEC 3).
- ``views``: How the global letterbox view and the ROI-zoom view travel as one tensor.
"""
