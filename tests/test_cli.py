"""The ``python -m bundle`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bundle.cli import build_parser, main

COMMANDS = ["synth", "validate", "convert-shenzhen", "montage", "benchmark"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "bundle", "--help"], capture_output=True, text=True, check=True)
    assert "synth" in result.stdout and "convert-shenzhen" in result.stdout


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_writes_60_valid_entries_byte_identical_for_any_worker_count(tmp_path, capsys):
    args = ["synth", "--per-site", "20", "--size", "128x128", "--seed", "4", "--quiet"]
    assert main([*args, "--output", str(tmp_path / "a"), "--workers", "2"]) == 0
    assert main([*args, "--output", str(tmp_path / "b"), "--workers", "1"]) == 0
    assert "wrote 60 images" in capsys.readouterr().out
    datalist = json.loads((tmp_path / "a" / "datalist.json").read_text())
    assert len(datalist["data"]) == 60 and datalist["sites"] == {"0": "Hosp-1", "1": "Hosp-2", "2": "Hosp-3"}
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert main(["validate", str(tmp_path / "a" / "datalist.json"), "--quiet"]) == 0


def test_synth_rejects_bad_size_with_a_clear_error(tmp_path, capsys):
    assert main(["synth", "--output", str(tmp_path), "--per-site", "1", "--size", "big"]) == 2
    assert "neither 'native' nor WxH" in capsys.readouterr().err


def test_montage_writes_a_png(synthetic_dataset, tmp_path):
    output = tmp_path / "montage.png"
    assert main(["montage", str(synthetic_dataset), "--output", str(output), "--per-site", "2"]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_benchmark_runs_and_writes_its_tables(tmp_path):
    assert main(["benchmark", "--quick", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "benchmark.json").read_text())
    assert results["suites"]["synth"] and (tmp_path / "benchmark.md").exists()
    expected = {"synth", "pipeline", "training", "encoder", "flops", "scaling", "options", "streaming", "efficiency"}
    assert expected <= set(results["suites"])
    names = [row["name"] for rows in results["suites"].values() for row in rows]
    assert any("bundle / plain" in n for n in names) and any("in memory / no cache" in n for n in names)
    assert any("peak resident memory of the training suite" in n for n in names)
    assert any("peak memory, 100 / 20 images" in n for n in names)
