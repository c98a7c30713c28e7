"""Utilities without domain knowledge: atomic writes, run locks, checkpoints, seeded randomness, paths and configs.

Modules (import names from them; the package itself exports nothing):

- ``atomic``: Atomic file output: write to a temporary file in the same folder, then rename over the target.
- ``checkpoints``: Checkpoints read safely (``weights_only=True``, errors that name the file and the fix) and saved
  atomically.
- ``distributed``: Distributed runs: which process writes files.
- ``locks``: One run per folder: a lock file that names its holder, released at exit, taken over when stale.
- ``paths``: The one place that knows where the bundle lives and how its configs are parsed.
- ``rng``: Random state of a training run: capture it for a checkpoint, restore it, re-seed it.
"""
