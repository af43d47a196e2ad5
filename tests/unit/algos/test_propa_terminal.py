"""PROPA's final step comes from the task (issue 15, item 1): on ``task=arith`` with the algorithm's own defaults
the simulations reach ``#### <answer>`` lines; a configured pattern that matches no final step of the task's worked
solutions stops the run at start-up, naming the key."""
from __future__ import annotations

import pytest

from steprl.algos.step import Step
from steprl.algos.propa.parts import EngineStepPolicy, final_step_test
from steprl.config import ConfigError
from steprl.rollout.types import Sample
from steprl.train import build
from tests.helpers import compose_train

BASE = ["algo=propa", "logger=none", "callbacks.progress_bar=null", "batch.prompts_per_step=2",
        "batch.samples_per_prompt=2", "batch.minibatch_size=4", "batch.micro_batch_size=4",
        "algo.mcts.iterations=2", "algo.mcts.max_depth=6", "algo.mcts.step_max_tokens=16",
        "algo.mcts.simulate_max_tokens=48", "task.num_val=8"]


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    return build(compose_train(BASE, tmp_path_factory.mktemp("propa_default")))[0]


def test_arith_final_step_is_the_answer_line(m):
    """With no override the arith task decides: '#### 13' is final, a reduction line is not."""
    assert m.mcts_cfg["terminal_regex"] is None
    pol = EngineStepPolicy(m, [])
    assert pol.is_terminal("#### 13", False) and pol.is_terminal("#### -2", False)
    assert not pol.is_terminal("3+5*2=3+10", False) and not pol.is_terminal("3+10=13", False)
    assert pol.is_terminal("3+10=13", True)  # the model stopped: the solution ends here


def test_arith_simulations_reach_final_steps(m):
    """Greedy simulations of the warm-started model end on '#### n' lines: a non-zero terminal fraction (the
    default '(?i)the final answer is' gave 0 of 108)."""
    qs = [m.task.make_sample("train", i) for i in range(4)]
    roots, stats = m.search(qs)
    assert stats["simulations"] > 0
    assert stats["sim_final"] > 0
    assert 0 < stats["sim_final"] / stats["simulations"] <= 1


def test_task_final_step_tests():
    """Each task's own final-step form (arith '####', math boxed / 'the final answer is', puzzles '<answer>')."""
    from steprl.tasks.arith import ArithTask
    from steprl.tasks.math import MathTask
    from steprl.tasks.puzzles import PuzzleTask

    arith = final_step_test(ArithTask.__new__(ArithTask), None)
    assert arith("#### 5") and not arith("7-2=5")
    math = final_step_test(MathTask.__new__(MathTask), None)
    assert math(r"So x = \boxed{3}.") and math("The final answer is 3") and not math("Let x = 3.")
    puz = final_step_test(PuzzleTask.__new__(PuzzleTask), None)
    assert puz("<answer>2</answer>") and not puz("The top edge matches.")
    over = final_step_test(ArithTask.__new__(ArithTask), "DONE")
    assert over("DONE 5") and not over("#### 5")


def test_pattern_matching_no_worked_solution_is_a_start_up_error(tmp_path):
    cfg = compose_train([*BASE, "algo.mcts.terminal_regex='(?i)the final answer is'"], tmp_path)
    with pytest.raises(ConfigError, match="algo.mcts.terminal_regex"):
        build(cfg)


def test_sim_terminal_frac_is_logged(m):
    qs = [m.task.make_sample("train", i) for i in range(2)]
    m.collector.collect(m, Step(qs))
    assert 0.0 <= m.metrics.peek()["propa/sim_terminal_frac"] <= 1.0
