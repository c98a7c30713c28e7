"""Synthetic multi-site first-trimester NT ultrasound (SPEC 1.3): the embedded default data."""

from bundle.data.synthetic.dataset import write_synthetic_dataset
from bundle.data.synthetic.generator import SyntheticCase, generate_case

__all__ = ["SyntheticCase", "generate_case", "write_synthetic_dataset"]
