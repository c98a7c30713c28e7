"""Training: the two-phase workflow steps, the Ignite handlers the configs attach, and stop signals.

Modules (import names from them; the package itself exports nothing):

- ``errors``: What a user sees last when a command fails: the message that names the file, setting or field and the
  fix.
- ``handlers``: Ignite handlers of the bundle: small classes with ``attach(engine)`` that keep state on the engine.
- ``help``: ``--help`` for the bundle's configs: the settings, their defaults and one line each, then exit 0.
- ``localizer``: Train the NT localiser (:class:`bundle.model.localizer.NTLocalizer`) from the datalist's boxes.
- ``progress``: Progress without a terminal: a log line at least every ``interval`` seconds with epoch, iteration,
  loss and ETA.
- ``schedules``: Learning-rate schedules of the two training phases (config key ``lr_schedule``).
- ``settings``: Checks of the main job's settings by name, before anything is written (``check_values`` in
  ``train.json``).
- ``signals``: SIGTERM and SIGINT during a run: stop at once, keep the last checkpoint, say how to resume.
- ``tracking``: MLflow tracking of the main job: both phases in one MLflow run, closed with the report as artifacts.
- ``workflow``: Helpers the bundle configs call: dataset preparation, logging, resume and phase bookkeeping.
"""
