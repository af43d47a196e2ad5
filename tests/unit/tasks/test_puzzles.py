"""Puzzles (spec §4.1, §4.8 cases 1 and 5): Jigsaw rewards by hand, pixel-exact generator invariants
(tiles reassemble, rotations round-trip, the right patch is the masked region and no decoy equals it),
determinism under a seed, image sources, and answer parsing that scores garbage 0."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from steprl.models.vision import IMAGE_PLACEHOLDER
from steprl.rollout.types import Sample
from steprl.tasks.puzzles import (ANGLES, JIGSAW_GRIDS, PuzzleTask, assemble, jigsaw_reward, make_jigsaw,
                                  make_patchfit, make_rotation, parse_answer, procedural_image, rotate, tiles_of)

GT = [1, 3, 4, 2]


def _img(seed=0, size=112):
    return procedural_image(np.random.default_rng(seed), size)


# ------------------------------------------------------------------------------------------ rewards (§4.8.1)
@pytest.mark.parametrize("pred,want", [([1, 2, 3, 4], 0.25), ([1, 3, 2, 4], 0.5), (GT, 1.0), ([2, 1, 3, 4], 0.0)])
def test_jigsaw_reward_hand_cases(pred, want):
    assert jigsaw_reward(pred, GT) == want
    task = PuzzleTask(puzzles=["jigsaw"], num_train=1, num_val=1)
    s = Sample(prompt="", answer="1,3,4,2", meta={"puzzle": "jigsaw", "num_options": 4})
    assert task.verify(s, f"<think>x</think><answer>{','.join(map(str, pred))}</answer>") == want


def test_jigsaw_malformed_answers_zero_or_partial():
    assert jigsaw_reward([1, 1, 2, 3], GT, "zero") == 0.0
    assert jigsaw_reward([1, 1, 2, 3], GT, "partial") == 0.25  # position 1 right
    assert jigsaw_reward([1, 3], GT, "partial") == 0.5          # missing positions count wrong
    assert jigsaw_reward([1, 3, 4, 2, 5], GT, "zero") == 0.0
    assert jigsaw_reward(None, GT) == 0.0


def test_random_guess_scores_one_over_mn_and_grid_table():
    assert len(JIGSAW_GRIDS) == 22 and all(2 <= m * n <= 9 for m, n in JIGSAW_GRIDS)
    perms = list(itertools.permutations([1, 2, 3, 4]))
    assert np.mean([jigsaw_reward(p, GT) for p in perms]) == pytest.approx(0.25)
    # the spec's note: uniform grids give E[1/MN] = 0.2092, not the paper's 26%
    assert np.mean([1 / (m * n) for m, n in JIGSAW_GRIDS]) == pytest.approx(0.2092, abs=5e-5)


# ------------------------------------------------------------------------------------------ pixel-exact (§4.8.5)
@pytest.mark.parametrize("grid", JIGSAW_GRIDS)
def test_jigsaw_tiles_reassemble_exactly(grid):
    rng = np.random.default_rng(sum(grid))
    p = make_jigsaw(_img(1), rng, grids=[grid])
    rows, cols = grid
    answer = [int(v) for v in p.answer.split(",")]
    assert sorted(answer) == list(range(1, rows * cols + 1))
    shown = tiles_of(p.info["shuffled"], rows, cols)
    rebuilt = assemble([shown[a - 1] for a in answer], rows, cols)
    assert np.array_equal(rebuilt, p.info["source"])
    assert p.info["source"].shape == (112 // rows * rows, 112 // cols * cols, 3)
    if answer != sorted(answer):  # the shuffled image itself is not the source
        assert not np.array_equal(p.info["shuffled"], p.info["source"])


@pytest.mark.parametrize("angle", ANGLES)
@pytest.mark.parametrize("direction", ["clockwise", "counter-clockwise"])
def test_rotation_round_trips(angle, direction):
    src = _img(2)[:, :100]  # not square: a quarter turn swaps the sides
    other = "counter-clockwise" if direction == "clockwise" else "clockwise"
    turned = rotate(src, angle, direction)
    assert np.array_equal(rotate(turned, angle, other), src)
    assert np.array_equal(rotate(src, angle, direction), rotate(src, (360 - angle) % 360, other))
    if angle:
        assert not np.array_equal(turned[:100, :100], src[:100, :100])


def test_rotation_puzzle_shows_the_turned_image():
    for seed in range(8):
        p = make_rotation(_img(seed), np.random.default_rng(seed))
        assert np.array_equal(p.image, rotate(p.info["source"], int(p.answer), p.info["direction"]))
        assert p.info["direction"] in p.question and p.num_options == 4


@pytest.mark.parametrize("seed", range(6))
def test_patchfit_correct_option_is_the_masked_region(seed):
    src = _img(seed)
    p = make_patchfit(src, np.random.default_rng(seed))
    y, x, s = p.info["box"]
    opts, k = p.info["options"], p.info["correct"]
    assert s == 28 and len(opts) == p.num_options and p.num_options - 1 in (3, 5, 7)
    assert p.answer == "ABCDEFGH"[k]
    assert np.array_equal(opts[k], src[y:y + s, x:x + s])
    others = [o for i, o in enumerate(opts) if i != k]
    assert not any(np.array_equal(o, opts[k]) for o in others)
    assert all(not np.array_equal(a, b) for a, b in itertools.combinations(others, 2))
    assert (p.info["masked"][y:y + s, x:x + s] == 128).all()
    for (oy, ox), o in zip(p.info["offsets"], opts):  # the canvas shows each option pixel for pixel
        assert np.array_equal(p.image[oy:oy + s, ox:ox + s], o)
    assert np.array_equal(p.image[:112, :112], p.info["masked"])


def test_patchfit_on_a_flat_image_still_has_distinct_decoys():
    flat = np.full((112, 112, 3), 77, np.uint8)
    p = make_patchfit(flat, np.random.default_rng(0), decoys=(7,))
    opts = p.info["options"]
    assert len(opts) == 8
    assert all(not np.array_equal(a, b) for a, b in itertools.combinations(opts, 2))


# ------------------------------------------------------------------------------------------ the task
def test_task_is_deterministic_under_its_seed_and_train_val_differ():
    a, b = PuzzleTask(seed=3), PuzzleTask(seed=3)
    c = PuzzleTask(seed=4)
    for i in range(6):
        sa, sb = a.train_dataset()[i], b.train_dataset()[i]
        assert sa.prompt == sb.prompt and sa.answer == sb.answer
        assert np.array_equal(np.asarray(sa.images[0]), np.asarray(sb.images[0]))
    assert any(not np.array_equal(np.asarray(a.train_dataset()[i].images[0]), np.asarray(c.train_dataset()[i].images[0]))
               for i in range(3))
    assert not np.array_equal(np.asarray(a.train_dataset()[0].images[0]), np.asarray(a.val_dataset()[0].images[0]))
    kinds = {a.train_dataset()[i].meta["puzzle"] for i in range(30)}
    assert kinds == {"rotation", "jigsaw", "patchfit"}


def test_prompt_has_one_image_placeholder_and_the_instruction():
    s = PuzzleTask(puzzles=["rotation"]).train_dataset()[0]
    assert s.prompt.count(IMAGE_PLACEHOLDER) == 1 and len(s.images) == 1
    assert "<think></think>" in s.prompt and "<answer></answer>" in s.prompt
    assert PuzzleTask(puzzles=["rotation"]).verify(s, f"<think>t</think><answer>{s.answer}</answer>") == 1.0


GARBAGE = ["", "no tags at all", "<answer></answer>", "<answer>banana</answer>", "<answer>45</answer>",
           "<answer>99999999999999999999</answer>", "<answer>Z</answer>", "<answer>1,2", "\x00\xff<answer>\n</answer>",
           "<answer>" + "9," * 5000 + "</answer>", "<answer>-90</answer>", "<think><answer>"]


@pytest.mark.parametrize("kind,answer,k", [("rotation", "90", 4), ("patchfit", "B", 4), ("jigsaw", "1,3,4,2", 4)])
def test_garbage_scores_zero_and_never_raises(kind, answer, k):
    task = PuzzleTask(puzzles=[kind])
    s = Sample(prompt="", answer=answer, meta={"puzzle": kind, "num_options": k})
    for g in GARBAGE:
        assert task.verify(s, g) == 0.0, g
    assert task.verify(s, None) == 0.0
    assert task.verify(s, f"<answer>wrong</answer> then <answer>{answer}</answer>") == 1.0  # the last one counts
    assert parse_answer("patchfit", "<answer>(b)</answer>", 4) == 1
    assert parse_answer("patchfit", "<answer>E</answer>", 4) is None  # only A-D exist
    assert parse_answer("rotation", "<answer>270 degrees</answer>", 4) == 3


def test_format_weight_adds_the_format_reward():
    task = PuzzleTask(puzzles=["rotation"], format_weight=1.0)
    s = Sample(prompt="", answer="90", meta={"puzzle": "rotation", "num_options": 4})
    assert task.verify(s, "<think>a</think><answer>90</answer>") == 1.0
    assert task.verify(s, "<answer>90</answer>") == 0.5
    assert task.verify(s, "<think>a</think><answer>0</answer>") == 0.5


def test_folder_source_and_bad_configs(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(_img(i, 150)[:, :120]).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    task = PuzzleTask(source=str(tmp_path), image_size=84, seed=0)
    s = task.train_dataset()[0]
    assert s.images[0].size[0] >= 84
    other = tmp_path / "val"
    other.mkdir()
    Image.fromarray(np.full((90, 90, 3), 200, np.uint8)).save(other / "v.png")
    split = PuzzleTask(source=str(tmp_path), val_source=str(other), image_size=84, puzzles=["rotation"])
    assert (np.asarray(split.val_dataset()[0].images[0]) == 200).all()
    assert not (np.asarray(split.train_dataset()[0].images[0]) == 200).all()
    with pytest.raises(ValueError, match="task.source"):
        PuzzleTask(source=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="task.val_source"):
        PuzzleTask(val_source=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="task.puzzles"):
        PuzzleTask(puzzles=["sudoku"])
    with pytest.raises(ValueError, match="task.jigsaw_grids"):
        PuzzleTask(jigsaw_grids=[[1, 1]])
    with pytest.raises(ValueError, match="task.mix"):
        PuzzleTask(mix=[1, 2])


def test_skimage_photos_when_installed():
    pytest.importorskip("skimage", reason="scikit-image is an optional demo source")
    task = PuzzleTask(source="skimage", seed=0, puzzles=["jigsaw"], jigsaw_grids=[[2, 2]])
    assert len(task.source) == 10
    for i in range(10):  # every photo, grey ones as RGB, each a 112 x 112 square before cutting
        src = task.source.get(i)
        assert src.shape == (112, 112, 3) and src.dtype == np.uint8 and src.std() > 5
    s = task.train_dataset()[0]
    assert s.images[0].size == (112, 112)


def test_scene_source_has_an_up_direction_and_is_deterministic():
    from steprl.tasks.puzzles import scene_image

    task = PuzzleTask(source="scene", puzzles=["rotation"], seed=3, num_val=4)
    for i in range(40):
        img = task.source.get(i)
        assert img.shape == (112, 112, 3) and img.dtype == np.uint8
        # every top-row pixel is sky (each channel >= 150 - 6 of noise) or sun (mean >= (255 + 255 + 120) / 3 - 6),
        # every bottom-row pixel ground (each channel <= 80 + 6): no shape reaches either (shapes stand at most
        # size // 6 below the horizon and are at most size // 3 tall)
        light = img.mean(-1)
        assert light[0].min() >= 144 and img[-1].max() <= 86, i
        assert np.array_equal(img, task.source.get(i))
    assert np.array_equal(scene_image(np.random.default_rng([3, 8, 5])), task.source.get(5))
    # validation puzzles come from their own index range; a shown Rotation turns back to an upright scene
    p = task.puzzle("val", 0)
    assert not np.array_equal(p.info["source"], task.source.get(0))
    upright = rotate(p.image, (360 - int(p.answer)) % 360, p.info["direction"])
    assert upright.mean(-1)[0].min() >= 144 and upright[-1].max() <= 86
