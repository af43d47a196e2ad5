"""Golden losses: every RL algorithm's ``experiment=<algo>_tiny`` recipe, run in this process for 2 steps from
seed 0 with one torch thread (no validation, checkpoint or logger), logs the per-step ``train/loss``,
``train/grad_norm``, ``train/entropy`` and the advantages' absolute sum recorded in ``golden_losses.json``
(``record_golden.KEYS``; why each: the recorder's docstring) up to float32 rounding. A refactor of the engine or
the configs must leave them there; a change that is meant to move them re-records them, saying why in the commit:

    PYTHONPATH=$PWD/src python tests/unit/engine/record_golden.py [--only grpo,prime,...]

On one machine and one torch build with one thread (the recorder and this test pin ``torch_threads=1``) the
numbers repeat bit for bit. Another CPU's kernels round float32 sums differently: a machine of the same kind
moved them by up to 6e-6 relative (3e-5 for PROPA's loss, itself ~1e-3) and, for the losses that are sums
cancelling to ~1e-8, by up to 6e-8 absolute, with the same sampled tokens. ``RTOL`` and ``ATOL`` admit that and
nothing a changed formula, mask or schedule makes (those move the gradient norm or the advantages by far more).
About 45-60 s for the 15 recipes on a 2-core CPU (3-4 s each), so not marked slow.
"""
from __future__ import annotations

import json

import pytest

from tests.unit.engine.record_golden import ALGOS, GOLDEN, KEYS, STEPS, numbers

RECORDED = json.loads(GOLDEN.read_text())
RTOL, ATOL = 1e-4, 1e-6   # float32 rounding across CPUs (see above)


def test_every_rl_recipe_is_recorded():
    from tests.helpers import CONF

    recipes = {p.stem[: -len("_tiny")] for p in (CONF / "experiment").glob("*_tiny.yaml")}
    assert set(ALGOS) == recipes - {"sft", "propa_puzzles", "league"}  # sft is not RL; the other two are variants
    assert set(RECORDED) == set(ALGOS)
    assert all(set(RECORDED[a]) == set(KEYS) and all(len(v) == STEPS for v in RECORDED[a].values())
               for a in ALGOS)


def _close(got: list, recorded: list) -> bool:
    """Step by step: both missing (``None``, e.g. a step that trained on nothing), or equal within RTOL / ATOL."""
    return len(got) == len(recorded) and all(
        g is None and r is None or None not in (g, r) and g == pytest.approx(r, rel=RTOL, abs=ATOL)
        for g, r in zip(got, recorded))


@pytest.mark.parametrize("algo", ALGOS)
def test_golden_losses(algo, tmp_path):
    got = numbers(algo, tmp_path)
    for key in KEYS:
        assert _close(got[key], RECORDED[algo][key]), (
            f"experiment={algo}_tiny: {key} {got[key]} != recorded {RECORDED[algo][key]} (beyond float32 rounding); "
            f"re-record only if the change is meant to move them (record_golden.py --only {algo})")
