"""Hospital-wise split: held-out site, seeded source-site train/val split by patient."""

from __future__ import annotations

import pytest
from bundle.data.splits import split_by_site


def _entries():
    entries = []
    for site in range(3):
        for patient in range(20):
            for view in range(2):  # two images of the same patient
                entries.append(
                    {
                        "site": site,
                        "case_id": f"s{site}_p{patient}_v{view}",
                        "meta": {"patient_id": f"s{site}_p{patient}"},
                    }
                )
    return entries


def test_held_out_site_is_only_in_held_out():
    split = split_by_site(_entries(), held_out_site=2, seed=0)
    assert {e["site"] for e in split["held_out"]} == {2}
    assert all(e["site"] != 2 for e in split["train"] + split["val"])
    assert len(split["train"]) + len(split["val"]) + len(split["held_out"]) == 120


def test_no_patient_straddles_train_and_val_and_each_source_site_has_validation():
    split = split_by_site(_entries(), held_out_site=2, val_fraction=0.15, seed=3)
    train = {e["meta"]["patient_id"] for e in split["train"]}
    val = {e["meta"]["patient_id"] for e in split["val"]}
    assert not train & val
    assert {e["site"] for e in split["val"]} == {0, 1}
    assert len(val) == 6  # 15 % of 20 patients at each of two sites


def test_split_is_seeded():
    a = split_by_site(_entries(), 0, seed=1)
    assert a == split_by_site(_entries(), 0, seed=1)
    assert a["val"] != split_by_site(_entries(), 0, seed=2)["val"]


def test_unknown_held_out_site_is_an_error():
    with pytest.raises(ValueError, match="held_out_site 5 has no images"):
        split_by_site(_entries(), 5)


def test_negative_held_out_site_means_no_held_out_split():
    from bundle.data.splits import split_by_site

    entries = [{"site": s, "case_id": f"c{s}_{i}", "image": f"{s}_{i}.png"} for s in (0, 1) for i in range(10)]
    split = split_by_site(entries, -1, 0.2, 0)
    assert split["held_out"] == [] and len(split["train"]) + len(split["val"]) == 20
