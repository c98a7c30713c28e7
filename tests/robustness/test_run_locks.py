"""Two runs on one output or models folder: the second is refused at once, naming the first (issue 18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundle.utils.locks import LOCK_NAME, RunLockError, acquire_run_locks, release_run_locks
from conftest import TINY_TRAINING

ROOT = Path(__file__).resolve().parents[2]


def test_a_live_holder_refuses_a_stale_one_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "out" / LOCK_NAME
        lock.parent.mkdir()
        import socket

        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "earlier"}))
        with pytest.raises(RunLockError, match=rf"output_dir = .*out: another run is using it \(process {holder.pid}"):
            acquire_run_locks({"output_dir": tmp_path / "out"})
        assert json.loads(lock.read_text())["pid"] == holder.pid  # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()
    taken = acquire_run_locks({"output_dir": tmp_path / "out"})  # its process is gone: stale
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    release_run_locks(taken)
    assert not lock.exists()


def test_a_second_main_job_on_the_same_folders_is_refused_at_once(tmp_path):
    args = [a for key, value in TINY_TRAINING.items() for a in (f"--{key}", json.dumps(value))]
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json"]
    command += ["--bundle_root", str(tmp_path), "--dataset_dir", str(tmp_path / "data"), *args]
    long_first = [*command, "--phase1_epochs", "500"]  # still training while the others start
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # leaves a core to the runs that must be refused at once
    first = subprocess.Popen(long_first, cwd=ROOT, env=one_thread, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / "runs" / "quick" / LOCK_NAME
        deadline = time.monotonic() + 120
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lock.exists(), "the first run never took its lock"
        started = time.monotonic()
        second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0
        assert f"another run is using it (process {first.pid}" in second.stderr, second.stderr[-2000:]
        assert time.monotonic() - started < 60  # refused at start, not after training
        # another output_dir still shares models/: refused too, naming models_dir
        elsewhere = [*command, "--output_dir", str(tmp_path / "other")]
        other = subprocess.run(elsewhere, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert other.returncode != 0 and "models_dir = " in other.stderr and str(first.pid) in other.stderr
        assert first.poll() is None, "the first run ended before the checks; they prove nothing"
    finally:
        first.kill()  # a crash: its locks stay behind, stale
        first.wait()
    assert lock.exists()
    taken = acquire_run_locks({"output_dir": lock.parent, "models_dir": tmp_path / "models"})
    release_run_locks(taken)
    assert not lock.exists() and not (tmp_path / "models" / LOCK_NAME).exists()
