"""A mistyped ``--dataset_dir`` never touches the user's files and never trains on synthetic data (issue 19.1).

Synthetic data is generated only at the config's default location (``synthetic_dir``) or with
``--synthetic#generate true``, and never into a folder holding files the generator did not write.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bundle.data.synthetic.dataset import MARKER, write_synthetic_dataset
from bundle.utils.paths import config_file, load_config

ROOT = Path(__file__).resolve().parents[2]


def _user_folder(root: Path) -> Path:
    """A user's dataset: a datalist and one image, at the paths the generator would write."""
    (root / "images/site0").mkdir(parents=True)
    (root / "images/site0/s0_000000.png").write_bytes(b"the user's own image bytes")
    entry = {"image": "images/site0/s0_000000.png", "roi": [1, 1, 5, 5], "site": 0}
    (root / "mylist.json").write_text(json.dumps({"data": [entry]}))
    (root / "datalist.json").write_text(json.dumps({"data": [entry], "note": "the user's"}))
    return root


def _checksums(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _datalist(tmp_path: Path, **overrides):
    parser = load_config(config_file("train.json"), {"bundle_root": str(tmp_path / "bundle"), **overrides})
    return parser.get_parsed_content("datalist")


@pytest.mark.parametrize(
    "typed, expect",
    [
        ("REAL/mylst.json", "no such datalist file; the folder holds datalist.json, mylist.json"),
        ("REAL/mylist.jsn", "looks like a file name: a datalist file must end in .json"),
        ("REAL2", "Fix dataset_dir"),
        ("REAL/missing_folder", "Fix dataset_dir"),
    ],
)
def test_a_mistyped_dataset_dir_is_an_error_and_the_user_folder_stays_byte_identical(tmp_path, typed, expect):
    real = _user_folder(tmp_path / "REAL")
    before = _checksums(real)
    with pytest.raises(Exception) as caught:
        _datalist(tmp_path, dataset_dir=str(tmp_path / typed))
    message = str(caught.value.__cause__ or caught.value)
    assert str(tmp_path / typed) in message and expect in message, message
    assert _checksums(real) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REAL"]  # nothing created, not even a folder


def test_generate_on_request_never_writes_over_a_users_files(tmp_path):
    real = _user_folder(tmp_path / "REAL")
    before = _checksums(real)
    (real / "datalist.json").unlink()  # no datalist: the generator would fill this folder
    before.pop("datalist.json")
    with pytest.raises(Exception) as caught:
        _datalist(tmp_path, dataset_dir=str(real), **{"synthetic#generate": True})
    message = str(caught.value.__cause__ or caught.value)
    assert str(real) in message and "never writes over them" in message
    assert _checksums(real) == before
    with pytest.raises(FileExistsError, match="never writes over them"):
        write_synthetic_dataset(real, per_site=1, sites=1, size=(64, 64), progress=False)
    assert _checksums(real) == before


def test_the_generator_may_refill_its_own_folder(tmp_path):
    out = tmp_path / "synthetic"
    write_synthetic_dataset(out, per_site=1, sites=1, size=(64, 64), progress=False)
    assert (out / MARKER).is_file() and (out / "datalist.json").is_file()
    write_synthetic_dataset(out, per_site=2, sites=1, size=(64, 64), progress=False)  # its own files: allowed
    assert len(json.loads((out / "datalist.json").read_text())["data"]) == 2


def test_the_training_command_names_the_mistyped_path_in_one_line(tmp_path):
    real = _user_folder(tmp_path / "REAL2")
    before = _checksums(real)
    typed = real / "mylst.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json"]
    command += ["--bundle_root", str(tmp_path / "bundle"), "--dataset_dir", str(typed)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if str(typed) in line and "no datalist" in line]
    assert lines, result.stderr[-2000:]
    assert _checksums(real) == before
    assert not (tmp_path / "bundle" / "data").exists()
