"""One :class:`bundle.deploy.inference.Reconstructor` shared by the tasks, loaded on first use and after training."""

from __future__ import annotations

import threading

from bundle.deploy.inference import Reconstructor


class SharedReconstructor:
    """Lazily built reconstructor (the server starts even before a model is trained).

    Args:
        overrides: ``configs/inference.json`` overrides (``models_dir``, architecture settings).
    """

    def __init__(self, overrides: dict) -> None:
        self.overrides = overrides
        self._model: Reconstructor | None = None
        self._lock = threading.Lock()

    def get(self) -> Reconstructor:
        """The reconstructor, built from the current checkpoint on first call."""
        with self._lock:
            if self._model is None:
                self._model = Reconstructor(overrides=self.overrides)
            return self._model

    def reload(self) -> None:
        """Forget the loaded model so the next call reads the (re)trained checkpoint."""
        with self._lock:
            self._model = None
