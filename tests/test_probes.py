"""Latent probes and scores against hand computations (SPEC 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bundle.latent.ood import auroc, fit_gaussian, knn_distance, l2_normalize, mahalanobis
from bundle.latent.probes import (
    ProbeSettings,
    entropy,
    provenance_probabilities,
    quality_metrics,
    train_provenance_probe,
)
from bundle.latent.scoring import fit_quality_probe, fit_scorer, load_scorer, save_scorer
from sklearn.metrics import roc_auc_score


def test_mahalanobis_matches_a_hand_computation():
    latents = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    fit = fit_gaussian(latents, shrinkage=0.0)  # mean (1, 2), covariance diag(1, 4)
    assert np.allclose(fit.mean, [1.0, 2.0])
    assert np.allclose(fit.precision, np.diag([1.0, 0.25]))
    # (3, 2): dx = 2, dy = 0 -> sqrt(4 * 1) = 2;  (1, 6): dy = 4 -> sqrt(16 / 4) = 2;  (2, 3): sqrt(1 + 1/4)
    assert np.allclose(mahalanobis(np.array([[3.0, 2.0], [1.0, 6.0], [2.0, 3.0]]), fit), [2.0, 2.0, math.sqrt(1.25)])


def test_full_shrinkage_gives_a_scaled_identity_and_ledoit_wolf_is_between():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(50, 4)) * [1.0, 2.0, 3.0, 4.0]
    fit = fit_gaussian(latents, shrinkage=1.0)
    centred = latents - latents.mean(0)
    average_variance = np.trace(centred.T @ centred / len(latents)) / 4
    assert np.allclose(fit.precision, np.eye(4) / average_variance)
    assert 0.0 <= fit_gaussian(latents).shrinkage <= 1.0


def test_knn_distance_matches_a_hand_computation_on_normalised_latents():
    bank = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])  # normalised: (1,0), (0,1), (-1,0)
    query = np.array([[5.0, 0.0]])  # normalised (1, 0): distances 0, sqrt(2), 2
    assert np.allclose(knn_distance(query, bank, k=1), [0.0])
    assert np.allclose(knn_distance(query, bank, k=2), [math.sqrt(2)])
    assert np.allclose(knn_distance(query, bank, k=3), [2.0])
    # the bank scored against itself: the nearest other latent is sqrt(2) away for every row
    assert np.allclose(knn_distance(bank, bank, k=1, exclude_self=True), [math.sqrt(2)] * 3)
    assert np.allclose(np.linalg.norm(l2_normalize(bank), axis=1), 1.0)
    with pytest.raises(ValueError, match="k=4"):
        knn_distance(query, bank, k=4)


def test_auroc_on_separable_reversed_tied_and_random_scores():
    assert auroc([0.1, 0.2, 0.3], [0.5, 0.9]) == 1.0
    assert auroc([0.5, 0.9], [0.1, 0.2, 0.3]) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0]) == 0.5
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(size=40), rng.normal(0.5, size=30)
    expected = roc_auc_score(np.r_[np.zeros(40), np.ones(30)], np.r_[neg, pos])
    assert auroc(neg, pos) == pytest.approx(expected)


def test_ood_scores_separate_a_shifted_toy_site_perfectly():
    rng = np.random.default_rng(2)
    centre, other = np.r_[5.0, np.zeros(7)], np.r_[0.0, 5.0, np.zeros(6)]
    train, val = rng.normal(size=(200, 8)) + centre, rng.normal(size=(50, 8)) + centre
    held_out = rng.normal(size=(50, 8)) + other  # another site: latents point elsewhere
    assert auroc(mahalanobis(val, fit_gaussian(train)), mahalanobis(held_out, fit_gaussian(train))) == 1.0
    assert auroc(knn_distance(val, train, 5), knn_distance(held_out, train, 5)) == 1.0


def test_entropy_of_a_uniform_prediction_is_ln_n():
    for n in (2, 3, 5):
        assert entropy(np.full((4, n), 1.0 / n)) == pytest.approx(np.full(4, math.log(n)))
    probe = torch.nn.Linear(6, 3)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)  # a probe that cannot tell the sites apart predicts uniformly
    probabilities = provenance_probabilities(
        probe, np.zeros(6), np.ones(6), np.random.default_rng(0).normal(size=(5, 6))
    )
    assert entropy(probabilities) == pytest.approx(np.full(5, math.log(3)))
    assert entropy(np.array([[1.0, 0.0]])) == pytest.approx([0.0])


def test_provenance_probe_learns_separable_sites():
    rng = np.random.default_rng(3)
    latents = np.r_[rng.normal(-2, 1, (60, 4)), rng.normal(2, 1, (60, 4))]
    sites = np.r_[np.zeros(60, int), np.full(60, 7)]
    probe, mean, std, classes = train_provenance_probe(latents, sites, ProbeSettings(provenance_epochs=20))
    predicted = classes[provenance_probabilities(probe, mean, std, latents).argmax(1)]
    assert classes.tolist() == [0, 7] and (predicted == sites).mean() > 0.95


def test_quality_probe_recovers_a_linear_target():
    rng = np.random.default_rng(4)
    weights = rng.normal(size=16)
    train_z, held_z = rng.normal(size=(200, 16)), rng.normal(size=(80, 16))
    tables = {
        "train": {"z": train_z, "roi_edge_mae": train_z @ weights + 0.01 * rng.normal(size=200)},
        "held_out": {"z": held_z, "roi_edge_mae": held_z @ weights},
    }
    metrics = quality_metrics(tables)
    assert metrics["r2"] > 0.99 and metrics["spearman"] > 0.99
    assert metrics["mae"] < 0.1 * metrics["mae_predict_train_mean"]


def test_joint_thresholds_flag_the_stated_share_where_separate_ones_flag_nearly_twice_as_many():
    from bundle.latent.scoring import joint_thresholds

    rng = np.random.default_rng(0)
    maha, knn = rng.normal(size=2000), rng.normal(size=2000)  # two scores that disagree (independent)
    separate = np.mean((maha > np.percentile(maha, 95)) | (knn > np.percentile(knn, 95)))
    t_maha, t_knn, q = joint_thresholds(maha, knn, 95.0)
    joint = np.mean((maha > t_maha) | (knn > t_knn))
    assert separate > 0.09 and 0.045 <= joint <= 0.05 and 97.0 < q < 98.0
    same = rng.normal(size=500)  # two scores that agree: only the conformal step above the 95th percentile
    assert 95.0 < joint_thresholds(same, same, 95.0)[2] < 95.5


def test_conformal_allowance_keeps_new_familiar_images_under_the_stated_share():
    from bundle.latent.scoring import conformal_allowance, joint_thresholds

    assert [conformal_allowance(n) for n in (10, 19, 20, 44, 2000)] == [0, 0, 0, 1, 99]
    rng = np.random.default_rng(1)
    plain, conformal = [], []
    for _ in range(150):  # 44 validation images like the default main job, then 400 new familiar ones
        val, new = rng.normal(size=(2, 44)), rng.normal(size=(2, 400))
        t_maha, t_knn, _ = joint_thresholds(val[0], val[1], 95.0)
        conformal.append(np.mean((new[0] > t_maha) | (new[1] > t_knn)))
        q = next(
            q
            for q in np.arange(95.0, 100.01, 0.1)
            if np.mean(np.any(val > np.percentile(val, q, axis=1)[:, None], 0)) <= 0.05
        )
        plain.append(np.mean(np.any(new > np.percentile(val, q, axis=1)[:, None], 0)))
    # a plain percentile of 44 images flags more than 5 % of new images; the conformal rule does not
    assert np.mean(plain) > 0.055 and np.mean(conformal) <= 0.05


def test_scorer_round_trip_and_flags(tmp_path):
    rng = np.random.default_rng(5)
    train = {"z": rng.normal(size=(120, 8)), "roi_edge_mae": rng.uniform(0.1, 0.3, 120)}
    val = {"z": rng.normal(size=(40, 8))}
    scorer = fit_scorer(train, val, k=5, percentile=95.0, info={"canvas_size": "64"})
    save_scorer(tmp_path / "scorer.npz", scorer)
    loaded = load_scorer(tmp_path / "scorer.npz")
    queries = np.r_[rng.normal(size=(5, 8)), rng.normal(size=(5, 8)) + 10.0]
    first, second = scorer.score(queries), loaded.score(queries)
    for name in first:
        assert np.array_equal(first[name], second[name]), name
    assert loaded.info["canvas_size"] == "64" and float(loaded.info["threshold_percentile_each"]) >= 95.0
    assert second["ood_flag"][5:].all()  # far-away latents are flagged
    assert np.mean(scorer.score(val["z"])["ood_flag"]) <= 0.05  # the pair flags 5 % of the threshold set
    probe = fit_quality_probe(train["z"], train["roi_edge_mae"])
    assert np.allclose(second["predicted_roi_edge_mae"], probe.predict(queries))
    with pytest.raises(FileNotFoundError, match="save_latents"):
        load_scorer(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="shape"):
        scorer.score(np.zeros((2, 3)))
