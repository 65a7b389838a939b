"""The toy world's renderer: determinism, ground-truth masks, captions and the dataset folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dreamrelation.toyworld.video_io import read_mp4, write_mp4
from dreamrelation.toyworld.world import (
    BACKGROUNDS,
    COLORS,
    GENERIC_MOTIONS,
    RELATIONS,
    SHAPES,
    Scene,
    background_image,
    render,
    sample_scenes,
    sprite_mask,
    write_dataset_folder,
)

ALL_MOTIONS = [*RELATIONS, *GENERIC_MOTIONS]


def scene(relation: str = "shaking_hands", seed: int = 7, **kwargs) -> Scene:
    return Scene(("person", "red"), ("circle", "blue"), relation, "striped", seed, **kwargs)


def test_catalogue_is_large_enough_and_colours_are_well_separated():
    assert len(SHAPES) >= 5 and "person" in SHAPES
    assert len(COLORS) >= 8 and len(BACKGROUNDS) >= 4 and len(RELATIONS) >= 8 and len(GENERIC_MOTIONS) >= 4
    palette = np.array(list(COLORS.values()), dtype=float)
    distances = np.linalg.norm(palette[:, None] - palette[None], axis=-1) + np.eye(len(palette)) * 1e9
    assert distances.min() > 90
    for name in BACKGROUNDS:  # every background is dull: far from every subject colour
        pixels = background_image(name).reshape(-1, 3).astype(float)
        assert np.linalg.norm(pixels[:, None] - palette[None], axis=-1).min() > 120


def test_same_seed_gives_identical_clips():
    first, second = render(scene()), render(scene())
    assert np.array_equal(first.frames, second.frames)
    assert np.array_equal(first.masks, second.masks)
    assert np.array_equal(first.trajectories, second.trajectories)
    assert first.caption == second.caption


def test_different_seeds_give_different_clips():
    assert not np.array_equal(render(scene(seed=1)).frames, render(scene(seed=2)).frames)


@pytest.mark.parametrize("relation", ALL_MOTIONS)
def test_every_motion_renders_with_the_documented_shapes(relation):
    clip = render(scene(relation))
    assert clip.frames.shape == (16, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (2, 16, 32, 32) and clip.masks.dtype == bool
    assert clip.trajectories.shape == (2, 16, 2)
    assert clip.masks.any(axis=(2, 3)).all()  # both subjects fully inside every frame
    assert clip.caption.startswith("a red person") or "a red person" in clip.caption
    assert clip.caption.endswith("on a striped background.")


def test_frames_and_size_are_parameters():
    clip = render(scene("walking_towards", frames=24, size=48))
    assert clip.frames.shape == (24, 48, 48, 3) and clip.masks.shape == (2, 24, 48, 48)


def test_masks_match_the_rendered_sprite_colours():
    for relation in ("hugging", "pushing", "high_five"):
        for seed in range(3):
            clip = render(Scene(("square", "green"), ("cross", "orange"), relation, "checkered", seed))
            first, second = clip.masks
            assert (clip.frames[second] == COLORS["orange"]).all()  # subject 2 is drawn on top
            assert (clip.frames[first & ~second] == COLORS["green"]).all()
            outside = clip.frames[~(first | second)]
            for color in COLORS.values():
                assert not (outside == color).all(axis=-1).any()


def test_trajectories_are_the_sprite_centres():
    clip = render(Scene(("square", "white"), ("square", "cyan"), "walking_apart", "dark", 3))
    for subject in range(2):
        for frame in range(clip.frames.shape[0]):
            ys, xs = np.nonzero(clip.masks[subject, frame])
            centre = np.array([xs.mean(), ys.mean()])
            assert np.abs(centre - clip.trajectories[subject, frame]).max() <= 0.5 + 1e-9


def test_sprites_are_full_size_and_distinct():
    silhouettes = [sprite_mask(shape, 8) for shape in SHAPES]
    for index, silhouette in enumerate(silhouettes):
        ys, xs = np.nonzero(silhouette)
        assert ys.min() == 0 and ys.max() == 7  # full height: the tracker reads size from it
        assert xs.max() - xs.min() <= 7
        for other in silhouettes[index + 1 :]:
            assert not np.array_equal(silhouette, other)


def test_params_override_the_sampled_values():
    clip = render(scene("walking_towards", params={"start_distance": 20.0, "angle_deg": 0.0, "mirror": 0}))
    assert clip.params["start_distance"] == 20.0
    distance = np.linalg.norm(clip.trajectories[0, 0] - clip.trajectories[1, 0])
    assert abs(distance - 20.0) < 2.5  # lateral offset and jitter only


def test_sample_scenes_respects_the_choices_and_never_repeats_a_colour_in_a_scene():
    rng = np.random.default_rng(0)
    scenes = sample_scenes(
        "hugging", 40, rng, shapes=("cross",), colors=("red", "blue", "white"), backgrounds=("grey",)
    )
    assert len(scenes) == 40 and len({s.seed for s in scenes}) == 40
    for sampled in scenes:
        assert sampled.subject1[0] == sampled.subject2[0] == "cross"
        assert sampled.subject1[1] != sampled.subject2[1]
        assert sampled.background == "grey"


def test_captions_follow_ntu_style():
    clip = render(Scene(("triangle", "orange"), ("circle", "blue"), "shaking_hands", "dotted", 1))
    assert clip.caption == "an orange triangle is shaking hands with a blue circle on a dotted background."
    still = render(Scene(("triangle", "red"), ("circle", "blue"), "standing_still", "dark", 1))
    assert still.caption == "a red triangle and a blue circle are standing still on a dark background."


def test_generic_motions_keep_the_subjects_apart():
    rng = np.random.default_rng(5)
    for motion in GENERIC_MOTIONS:
        for sampled in sample_scenes(motion, 10, rng):
            clip = render(sampled)
            assert not (clip.masks[0] & clip.masks[1]).any()


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown relation"):
        render(scene("dancing"))
    with pytest.raises(ValueError, match="unknown subject"):
        render(Scene(("dragon", "red"), ("circle", "blue"), "hugging", "dark", 0))
    with pytest.raises(ValueError, match="unknown background"):
        render(Scene(("square", "red"), ("circle", "blue"), "hugging", "forest", 0))


def test_mp4_round_trip_gives_the_frames_back(tmp_path):
    clip = render(scene("high_five", seed=11))
    path = write_mp4(tmp_path / "clip.mp4", clip.frames)
    decoded = read_mp4(path)
    assert decoded.shape == clip.frames.shape
    assert np.abs(decoded.astype(int) - clip.frames.astype(int)).max() <= 2


def test_write_dataset_folder_layout(tmp_path):
    clips = [render(scene("hugging", seed=seed)) for seed in (1, 2)]
    paths = write_dataset_folder(clips, tmp_path / "hugging", names=["a", "b"])
    assert [p.name for p in paths] == ["a.mp4", "b.mp4"]
    root = tmp_path / "hugging"
    assert (root / "a.txt").read_text(encoding="utf-8").strip() == clips[0].caption
    mask_files = sorted((root / "masks" / "a").glob("*.png"))
    assert [p.name for p in mask_files[:2]] == ["00000.png", "00001.png"] and len(mask_files) == 16
    for frame in (0, 15):
        image = np.asarray(Image.open(root / "masks" / "a" / f"{frame:05d}.png").convert("RGB"))
        first, second = clips[0].masks[:, frame]
        assert (image[second] == (0, 255, 0)).all()
        assert (image[first & ~second] == (255, 0, 0)).all()
        assert (image[~(first | second)] == 0).all()
    assert np.array_equal(read_mp4(paths[1]), clips[1].frames)
