"""Distributed runs: which process writes files."""

from __future__ import annotations

import torch


def is_rank0() -> bool:
    """True outside distributed runs and on rank 0: only rank 0 writes files."""
    return (
        not torch.distributed.is_available()
        or not torch.distributed.is_initialized()
        or torch.distributed.get_rank() == 0
    )
