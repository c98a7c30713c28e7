"""Training: the two-phase workflow steps, the Ignite handlers the configs attach, and stop signals.

Modules (import names from them; the package itself exports nothing):

- ``calibration``: Phase 2's loss weights set from per-term gradient magnitudes when the phase starts (an Ignite
  handler).
- ``errors``: What a user sees last when a command fails: the message that names the file, setting or field and the fix.
- ``handlers``: Ignite handlers that keep a training phase's state: resume checkpoints, best models, early stopping,
  completion.
- ``help``: ``--help`` for the bundle's configs: the settings, their defaults and one line each, then exit 0.
- ``localizer``: Train the NT localiser (:class:`bundle.model.localizer.NTLocalizer`) from the datalist's boxes.
- ``phase_handlers``: The handlers every training phase attaches, in one entry of the phase's handler list.
- ``phase_logging``: What a training phase logs: its loss and validation metrics, reconstruction grids and its progress.
- ``progress``: Progress of a training phase: a bar on a terminal, else a log line every ``interval`` seconds with the
  ETA.
- ``schedules``: Learning-rate schedules of the two training phases (config key ``lr_schedule``).
- ``settings``: Checks of the main job's settings by name, before anything is written (``check_values`` in
  ``train.json``).
- ``signals``: SIGTERM and SIGINT during a run: stop at once, keep the last checkpoint, say how to resume.
- ``tracking``: MLflow tracking of the main job: both phases in one MLflow run, closed with the report as artifacts.
- ``workflow``: Helpers the bundle configs call: dataset preparation, logging, resume and phase bookkeeping.
"""
