"""Puzzle steps (what PROPA searches over on task=puzzles): one line per step, the final step is the line with
``<answer>``; each sample's worked solution has that format, scores 1 and is cut by the task's splitter."""
from __future__ import annotations

import re

import numpy as np
import pytest

from steprl.tasks.puzzles import Puzzle, PuzzleTask, worked_solution

TERMINAL = re.compile("<answer>")  # conf/experiment/propa_puzzles_tiny.yaml: algo.mcts.terminal_regex
IMG = np.zeros((4, 4, 3), dtype=np.uint8)


@pytest.mark.parametrize("puzzle,want", [
    (Puzzle("jigsaw", IMG, "q", "3,1,4,2", 4, {"grid": (2, 2)}),
     "<think>Row 1: 3,1\nRow 2: 4,2</think>\n<answer>3,1,4,2</answer>"),
    (Puzzle("jigsaw", IMG, "q", "2,3,1", 3, {"grid": (1, 3)}),
     "<think>Row 1: 2,3,1</think>\n<answer>2,3,1</answer>"),
    (Puzzle("jigsaw", IMG, "q", "3,1,2", 3, {"grid": (3, 1)}),
     "<think>Row 1: 3\nRow 2: 1\nRow 3: 2</think>\n<answer>3,1,2</answer>"),
    (Puzzle("rotation", IMG, "q", "270", 4, {"direction": "clockwise"}),
     "<think>270 degrees clockwise.</think>\n<answer>270</answer>"),
    (Puzzle("patchfit", IMG, "q", "C", 6, {}),
     "<think>Patch C fits.</think>\n<answer>C</answer>"),
])
def test_worked_solution_by_hand(puzzle, want):
    assert worked_solution(puzzle) == want


def test_worked_solution_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown puzzle kind 'maze'"):
        worked_solution(Puzzle("maze", IMG, "q", "1", 1, {}))


def test_every_sample_solution_is_steps_ending_in_the_answer_line():
    task = PuzzleTask(num_train=40, num_val=4)
    kinds = set()
    for i in range(40):
        s = task.sample("train", i)
        steps = task.splitter.split_text(s.solution)
        kinds.add(s.meta["puzzle"])
        assert task.verify(s, s.solution) == 1.0
        assert steps[-1] == f"<answer>{s.answer}</answer>"
        assert [bool(TERMINAL.search(x)) for x in steps] == [False] * (len(steps) - 1) + [True]
        want = s.meta["grid"][0] + 1 if s.meta["puzzle"] == "jigsaw" else 2  # one think line per grid row
        assert len(steps) == want
        # the steps before the answer alone score 0: only the final step answers
        assert task.verify(s, "\n".join(steps[:-1])) == 0.0
    assert kinds == {"rotation", "jigsaw", "patchfit"}
    assert task.sample("val", 0).solution == PuzzleTask(num_train=40, num_val=4).sample("val", 0).solution
