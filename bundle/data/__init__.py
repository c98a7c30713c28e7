"""Data: readers, datalists, site splits, transforms (letterbox, ROI zoom), datasets, synthetic data.

Modules (import names from them; the package itself exports nothing):

- ``datalist``: The datalist (SPEC 1.1): loading, path resolution and validation.
- ``datasets``: Cached datasets: in memory (``CacheDataset``) or on disk (``PersistentDataset``) by one config key.
- ``geometry``: Each item's letterbox and zoom geometry, decoded from a batch once, however the batch was collated.
- ``items``: Inference items: a folder of images or a datalist as items with a unique, file-name-safe case id.
- ``leakage``: Leakage between splits that a per-entry check cannot see: shared patients and copied images (issue 19.9).
- ``montage``: Montage of a datalist for visual review: a row per site, NT box drawn, plus zoomed NT crops.
- ``readers``: Image readers for PNG/JPG/BMP, DICOM and NIfTI ultrasound frames (SPEC 1.2).
- ``roi_zoom``: ROI-zoom view: the NT box plus a margin, cropped from the native image onto a fixed small canvas.
- ``safe_transforms``: Transforms for batch runs that must go on past a bad image: the error is recorded, not raised.
- ``shenzhen``: Converter for the public Shenzhen first-trimester dataset ("Dataset for Fetus Framework") (SPEC 1.2).
- ``splits``: Hospital-wise splits derived at run time from ``site`` (SPEC 1.1).
- ``synthetic``: Synthetic multi-site first-trimester NT ultrasound (SPEC 1.3): the embedded default data.
- ``transforms``: MONAI transforms of the bundle: ultrasound loading, letterbox with ROI offsets, ROI mask (SPEC 1.2,
  2).
"""
