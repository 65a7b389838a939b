"""The oracle evaluator on freshly rendered ground truth.

Seed 31337 is used only here: the oracle's rules were designed on seeds 777, 2024 and 4242 and the
feature network was trained on seeds 0 and 1 (docs/toyworld.md), so these renders are unseen.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamrelation.toyworld.features import (
    FEATURE_DIM,
    RECIPE_FILE,
    WEIGHTS_FILE,
    extract_features,
    load_feature_net,
)
from dreamrelation.toyworld.oracle import (
    CLASSES,
    NONE,
    appearance_leakage,
    classify_relation,
    confusion_matrix,
    detect_background,
    evaluate,
    frechet_distance,
    relation_accuracy,
    subject_fidelity,
    subject_verdict,
    temporal_consistency,
    toy_fvd,
    track_subjects,
)
from dreamrelation.toyworld.world import (
    BACKGROUNDS,
    COLORS,
    GENERIC_MOTIONS,
    RELATIONS,
    Scene,
    background_image,
    render,
    sample_scenes,
)

TEST_SEED = 31337
PER_LABEL = 25


@pytest.fixture(scope="module")
def ground_truth():
    """label -> (videos, prompted subject pairs, scenes): PER_LABEL fresh renders of every label."""
    rng = np.random.default_rng(TEST_SEED)
    data = {}
    for label in [*RELATIONS, *GENERIC_MOTIONS]:
        scenes = sample_scenes(label, PER_LABEL, rng)
        videos = [render(s).frames for s in scenes]
        data[label] = (videos, [(s.subject1, s.subject2) for s in scenes], scenes)
    return data


@pytest.fixture(scope="module")
def predictions(ground_truth):
    return {
        label: [classify_relation(v, s) for v, s in zip(videos, subjects, strict=True)]
        for label, (videos, subjects, _scenes) in ground_truth.items()
    }


@pytest.mark.parametrize("relation", list(RELATIONS))
def test_every_relation_is_recognised_on_fresh_ground_truth(predictions, relation):
    accuracy = np.mean([p == relation for p in predictions[relation]])
    assert accuracy >= 0.98, f"{relation}: {accuracy:.2f} ({predictions[relation]})"


@pytest.mark.parametrize("motion", list(GENERIC_MOTIONS))
def test_generic_motions_are_no_relation(predictions, motion):
    assert np.mean([p == NONE for p in predictions[motion]]) >= 0.95, predictions[motion]


def test_relation_accuracy_is_the_fraction_classified_as_the_target(ground_truth):
    videos, subjects, _ = ground_truth["hugging"]
    assert relation_accuracy(videos, subjects, "hugging") >= 0.98
    assert relation_accuracy(videos, subjects, "pushing") == 0.0


def test_confusion_matrix_counts_pairs():
    matrix = confusion_matrix(
        ["hugging", "hugging", "wandering"], ["hugging", NONE, NONE], ["hugging", "wandering"]
    )
    assert matrix.shape == (2, len(CLASSES))
    assert matrix[0, CLASSES.index("hugging")] == 1 and matrix[0, CLASSES.index(NONE)] == 1
    assert matrix[1, CLASSES.index(NONE)] == 1 and matrix.sum() == 3


def test_subject_fidelity_is_one_on_ground_truth(ground_truth):
    for label in ("hugging", "punching", "wandering"):
        videos, subjects, _ = ground_truth[label]
        assert subject_fidelity(videos, subjects) == 1.0


def test_subject_fidelity_drops_when_a_subject_has_the_wrong_colour_or_shape(ground_truth):
    videos, subjects, scenes = ground_truth["shaking_hands"]
    recoloured = []
    for video, (first, second) in zip(videos, subjects, strict=True):
        spare = next(c for c in COLORS if c not in (first[1], second[1]))
        video = video.copy()
        video[(video == COLORS[first[1]]).all(axis=-1)] = COLORS[spare]
        recoloured.append(video)
    assert subject_fidelity(recoloured, subjects) == 0.0
    wrong_shape = [((("cross" if a[0] != "cross" else "square"), a[1]), b) for a, b in subjects]
    assert subject_fidelity(videos, wrong_shape) == 0.0


def test_subject_verdict_names_what_was_drawn(ground_truth):
    videos, subjects, _ = ground_truth["hugging"]
    video, (first, second) = videos[0], subjects[0]
    wrong = "cross" if first[0] != "cross" else "square"
    absent = next(c for c in COLORS if c not in (first[1], second[1]))
    asked = [first, second, (wrong, first[1]), (second[0], absent)]
    verdicts = [subject_verdict(t, s[0]) for t, s in zip(track_subjects(video, asked), asked, strict=True)]
    assert verdicts == ["ok", "ok", f"drawn as {first[0]}", "missing"]


def test_relation_survives_noise_and_missing_frames(ground_truth):
    rng = np.random.default_rng(0)
    for label in ("shaking_hands", "punching", "following"):
        videos, subjects, scenes = ground_truth[label]
        for video, pair, sampled in list(zip(videos, subjects, scenes, strict=True))[:5]:
            noisy = np.clip(video + rng.normal(0, 15, video.shape), 0, 255).astype(np.uint8)
            assert classify_relation(noisy, pair) == label
            gappy = video.copy()
            gappy[[4, 11]] = background_image(sampled.background)  # both subjects vanish twice
            assert classify_relation(gappy, pair) == label


def test_missing_subject_means_no_relation(ground_truth):
    videos, subjects, _ = ground_truth["hugging"]
    (first, second) = subjects[0]
    absent = next(c for c in COLORS if c not in (first[1], second[1]))
    assert classify_relation(videos[0], (first, (second[0], absent))) == NONE


def test_background_is_recognised_on_ground_truth(ground_truth):
    for label in ("standing_still", "pushing"):
        _videos, _subjects, scenes = ground_truth[label]
        for sampled in scenes[:10]:
            assert detect_background(render(sampled).frames) == sampled.background


def test_leakage_detects_exemplar_colours_shapes_and_background():
    exemplar_subjects = [("person", "white"), ("person", "yellow")]
    rng = np.random.default_rng(TEST_SEED + 1)
    # A "generator" that ignored the prompt and copied the exemplars (subjects and background).
    copies = [
        render(s).frames
        for s in sample_scenes("hugging", 6, rng, ("person",), ("white", "yellow"), ("striped",))
    ]
    prompts = [(("circle", "red"), ("square", "blue"))] * 6
    leaked = appearance_leakage(copies, prompts, exemplar_subjects, "striped", ["dark"] * 6)
    assert leaked["appearance_leakage"] == 1.0 and leaked["color_leakage"] == 1.0
    assert leaked["background_leakage"] == 1.0
    # Prompted colours drawn with the exemplars' shape: shape leakage only.
    person_shaped = [
        render(Scene(("person", "red"), ("person", "blue"), "hugging", "dark", seed)).frames
        for seed in range(4)
    ]
    leaked = appearance_leakage(person_shaped, prompts[:4], exemplar_subjects, "striped", ["dark"] * 4)
    assert leaked["shape_leakage"] == 1.0 and leaked["color_leakage"] == 0.0
    assert leaked["background_leakage"] == 0.0
    # A faithful generator leaks nothing.
    faithful = [
        render(Scene(("circle", "red"), ("square", "blue"), "hugging", "dark", seed)).frames
        for seed in range(4)
    ]
    clean = appearance_leakage(faithful, prompts[:4], exemplar_subjects, "striped", ["dark"] * 4)
    assert clean["appearance_leakage"] == 0.0


def test_temporal_consistency_is_in_unit_interval_and_drops_with_flicker(ground_truth):
    videos, _subjects, _ = ground_truth["walking_towards"]
    smooth = temporal_consistency(videos)
    assert 0.9 < smooth <= 1.0
    still = [np.repeat(videos[0][:1], 16, axis=0)]
    assert temporal_consistency(still) == 1.0
    rng = np.random.default_rng(0)
    flicker = [rng.integers(0, 256, v.shape, dtype=np.uint8) for v in videos[:3]]
    assert 0.0 < temporal_consistency(flicker) < smooth


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 4))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
    # Same covariance, shifted mean: the distance is the squared shift.
    assert frechet_distance(features, features + 3.0) == pytest.approx(4 * 9.0, rel=1e-6)
    # Same mean, covariance scaled by 4: tr(I + 4I - 2*2I) = D.
    scaled = (features - features.mean(0)) * 2 + features.mean(0)
    assert frechet_distance(features, scaled) == pytest.approx(
        np.trace(np.cov(features, rowvar=False)), rel=1e-6
    )


def test_toy_fvd_is_zero_for_a_set_and_larger_across_relations(ground_truth):
    hugging, punching = ground_truth["hugging"][0], ground_truth["punching"][0]
    assert toy_fvd(hugging, hugging) == pytest.approx(0.0, abs=1e-6)
    within = toy_fvd(hugging[:12], hugging[12:])
    across = toy_fvd(hugging[:12], punching[:12])
    assert across > 3 * within


def test_shipped_feature_net_loads_with_its_recipe():
    assert WEIGHTS_FILE.stat().st_size < 2_000_000
    recipe = json.loads(RECIPE_FILE.read_text(encoding="utf-8"))
    assert "python -m dreamrelation.toyworld.features" in recipe["command"] and "seed" in recipe
    net = load_feature_net()
    assert not net.training
    videos = [
        render(Scene(("circle", "red"), ("square", "blue"), "hugging", "dark", s)).frames for s in range(3)
    ]
    features = extract_features(videos)
    assert features.shape == (3, FEATURE_DIM) and np.isfinite(features).all()
    assert np.array_equal(features, extract_features(videos))


def test_evaluate_reports_every_metric(ground_truth):
    videos, subjects, _ = ground_truth["high_five"]
    metrics = evaluate(
        videos[:10],
        subjects[:10],
        "high_five",
        exemplar_subjects=[("person", "white")] * 2,
        exemplar_background="striped",
        reference_videos=videos[10:20],
        prompt_backgrounds=[s.background for s in ground_truth["high_five"][2][:10]],
    )
    expected = {
        "relation_accuracy",
        "subject_fidelity",
        "appearance_leakage",
        "color_leakage",
        "shape_leakage",
        "background_leakage",
        "temporal_consistency",
        "toy_fvd",
        "n_videos",
    }
    assert expected <= set(metrics)
    assert metrics["relation_accuracy"] == 1.0 and metrics["subject_fidelity"] == 1.0
    assert 0.0 < metrics["temporal_consistency"] <= 1.0 and metrics["toy_fvd"] >= 0.0
    assert set(BACKGROUNDS)  # the prompt backgrounds above are real names
