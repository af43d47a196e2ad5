"""Tasks: dataset + prompt format + outcome verifier + step splitter (+ step checker where one exists)."""
from steprl.tasks.arith import ArithTask, evaluate_expression, is_valid_reduction, reduce_once, worked_solution
from steprl.tasks.base import SampleListDataset, StepSplitter, Task, make_splitter
from steprl.tasks.code import CodeTask
from steprl.tasks.puzzles import PuzzleTask
from steprl.tasks.math import GSM8KTask, MathTask, extract_math_answer, grade_answer

__all__ = [
    "Task",
    "StepSplitter",
    "make_splitter",
    "SampleListDataset",
    "ArithTask",
    "PuzzleTask",
    "evaluate_expression",
    "reduce_once",
    "worked_solution",
    "is_valid_reduction",
    "MathTask",
    "GSM8KTask",
    "CodeTask",
    "grade_answer",
    "extract_math_answer",
]
