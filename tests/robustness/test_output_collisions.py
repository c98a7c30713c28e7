"""Inference outputs never overwrite each other, and a run never re-reads its own outputs (issues 18 and 19.8)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
from bundle.data.items import inference_items, unique_case_ids
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@given(st.lists(st.sampled_from(["a", "a_1", "a_2", "A", "b", "a_1_1"]), max_size=12))
def test_case_ids_are_unique_and_keep_their_own_names_first(names):
    unique = unique_case_ids(names)
    assert len({u.casefold() for u in unique}) == len(unique) == len(names)
    for name, new in zip(names, unique, strict=True):
        assert new == name or (new.startswith(f"{name}_") and new[len(name) + 1 :].isdigit())
    first_seen = {}
    for index, name in enumerate(names):
        first_seen.setdefault(name.casefold(), index)
    assert all(unique[i] == names[i] for i in first_seen.values())  # the first of each name keeps it


def test_clashing_case_ids_in_a_datalist_get_free_names(tmp_path):
    entries = [{"image": f"img{i}.png", "case_id": case} for i, case in enumerate(["a", "a_1", "a"])]
    (tmp_path / "list.json").write_text(json.dumps({"data": entries}))
    assert [item["case_id"] for item in inference_items(tmp_path / "list.json")] == ["a", "a_1", "a_2"]


def _run(root: Path, source: Path, out: Path) -> list[dict]:
    from conftest import TINY_PAPER_ARCH, inference_command

    command = inference_command(root / "models", source, out, TINY_PAPER_ARCH)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return list(csv.DictReader((out / "results.csv").open()))


def test_a_folder_with_clashing_names_and_the_output_inside_it(tiny_trained_paper, tmp_path):
    root, _ = tiny_trained_paper
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(["a.png", "a.jpg", "a_1.png"]):
        Image.fromarray(np.full((48, 64), 40 + 60 * i, np.uint8)).save(folder / name)
    out = folder / "out"  # the output folder inside the input folder
    first = _run(root, folder, out)
    assert sorted(r["case_id"] for r in first) == ["a", "a_1", "a_2"]
    reconstructions = {r["reconstruction"] for r in first}
    assert len(reconstructions) == 3 and all(Path(p).is_file() for p in reconstructions)
    assert {Path(r["image"]).name for r in first} == {"a.png", "a.jpg", "a_1.png"}
    second = _run(root, folder, out)  # a second run does not read the first run's reconstructions
    assert sorted(Path(r["image"]).name for r in second) == ["a.jpg", "a.png", "a_1.png"]
