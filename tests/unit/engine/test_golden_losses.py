"""Golden losses: every RL algorithm's ``experiment=<algo>_tiny`` recipe, run in this process for 2 steps from
seed 0 with one torch thread (no validation, checkpoint or logger), logs the per-step ``train/loss``,
``train/grad_norm``, ``train/entropy`` and the advantages' absolute sum recorded in ``golden_losses.json`` bit
for bit (``record_golden.KEYS``; why each: the recorder's docstring). A refactor of the engine or the configs must
leave them identical; a change that is meant to move them re-records them, saying why in the commit:

    PYTHONPATH=$PWD/src python tests/unit/engine/record_golden.py [--only grpo,prime,...]

Bit equality holds on one machine and one torch build with one thread (float sums in another order round
differently), so the recorder and this test pin ``torch_threads=1``; on another machine re-record first.
About 45-60 s for the 15 recipes on a 2-core CPU (3-4 s each), so not marked slow.
"""
from __future__ import annotations

import json

import pytest

from tests.unit.engine.record_golden import ALGOS, GOLDEN, KEYS, STEPS, numbers

RECORDED = json.loads(GOLDEN.read_text())


def test_every_rl_recipe_is_recorded():
    from tests.helpers import CONF

    recipes = {p.stem[: -len("_tiny")] for p in (CONF / "experiment").glob("*_tiny.yaml")}
    assert set(ALGOS) == recipes - {"sft", "propa_puzzles", "league"}  # sft is not RL; the other two are variants
    assert set(RECORDED) == set(ALGOS)
    assert all(set(RECORDED[a]) == set(KEYS) and all(len(v) == STEPS for v in RECORDED[a].values())
               for a in ALGOS)


@pytest.mark.parametrize("algo", ALGOS)
def test_golden_losses(algo, tmp_path):
    got = numbers(algo, tmp_path)
    for key in KEYS:
        assert got[key] == RECORDED[algo][key], (
            f"experiment={algo}_tiny: {key} {got[key]} != recorded {RECORDED[algo][key]}; re-record only if the "
            f"change is meant to move them (record_golden.py --only {algo})")
