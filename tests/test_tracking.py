"""MLflow tracking of the main job (issue 32): both phases, settings and report in one local MLflow run."""

from __future__ import annotations

import sys

import mlflow  # the "tracking" extra (in "test"); the bundle itself runs without it
from bundle.training import tracking
from conftest import _train_tiny


def test_tracking_mlflow_is_rerun_with_the_bundle_settings(monkeypatch):
    argv = ["/x/site-packages/monai/bundle/__main__.py", "run", "--config_file", "configs/train.json"]
    assert tracking.bundle_settings_argv(argv) is None
    assert tracking.bundle_settings_argv([*argv, "--tracking", "mlflow", "--seed", "1"])[-4:] == [
        "--tracking",
        tracking.SETTINGS_FILE,
        "--seed",
        "1",
    ]
    assert tracking.bundle_settings_argv([*argv, "--tracking=mlflow"])[-1] == f"--tracking={tracking.SETTINGS_FILE}"
    assert tracking.bundle_settings_argv([*argv, "--tracking", "my_settings.json"]) is None

    calls = []
    monkeypatch.setattr(tracking.os, "execv", lambda exe, args: calls.append((exe, args)))
    tracking.use_bundle_settings([*argv, "--tracking", "mlflow"])
    assert calls == [
        (sys.executable, [sys.executable, "-m", "monai.bundle", *argv[1:], "--tracking", tracking.SETTINGS_FILE])
    ]
    tracking.use_bundle_settings(["pytest", "--tracking", "mlflow"])  # not a monai.bundle command: left alone
    assert len(calls) == 1


def test_main_job_records_both_phases_settings_and_report(tmp_path):
    root, _ = _train_tiny(tmp_path, tracking=tracking.SETTINGS_FILE, log_interval=1)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'runs' / 'quick' / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("fetal_nt_roi_cae")
    (run,) = client.search_runs(experiment.experiment_id)
    assert run.info.run_name == "quick" and run.info.status == "FINISHED"
    metrics = set(run.data.metrics)
    assert {"phase1/train_loss", "phase1/val_ms_ssim", "phase2/train_loss", "phase2/val_objective"} <= metrics
    for phase in ("phase1", "phase2"):
        assert {f"{phase}/val_roi_mae", f"{phase}/val_roi_edge_mae", f"{phase}/val_psnr"} <= metrics
    history = client.get_metric_history(run.info.run_id, "phase2/val_roi_mae")
    assert [m.step for m in history] == [1, 2] and all(m.value > 0 for m in history)
    assert run.data.params["phase1_epochs"] == "2" and run.data.params["model"] == "dual_view"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "report" in artifacts and any(a.startswith("config_") for a in artifacts), artifacts
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/metrics.md", "report/metrics.json", "report/per_image.csv"} <= report, report


def test_tracking_without_mlflow_says_how_to_install_it(monkeypatch):
    from bundle.training.errors import deliberate_error

    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    try:
        tracking.PhaseMLFlowHandler(prefix="phase1/", tracking_uri="sqlite:///unused.db")
    except ValueError as error:
        assert deliberate_error(error) is error  # printed alone, as the last line
        assert 'pip install -e ".[tracking]"' in str(error)
    else:
        raise AssertionError("no error without MLflow")
