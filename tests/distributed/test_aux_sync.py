"""Models trained by an algorithm's own optimiser stay identical on every rank: after a 2-rank DDP step
(CPU, gloo), PRIME's implicit PRM and OREAL's token reward model hold the same weights on both ranks (their
gradients are averaged before each step; without it each rank's copy trains on its own rows and they drift
apart: checked by hand with the averaging disabled). PRIME also runs under FSDP2, where a rank that filled its
batch must keep rolling out in step with a rank still refilling (a sharded forward is a collective).
Each run is a subprocess with a timeout, so a hang fails the test instead of blocking it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.gloo import run_steps

COMMON = ["trainer.max_steps=1", "trainer.num_sanity_val_steps=0", "trainer.val_check_interval=100"]

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def run(out: Path, *overrides: str, timeout: int = 400) -> list[dict]:
    m = run_steps(out, *COMMON, *overrides, timeout=timeout)
    return [json.loads(m.with_name(f"m.json.rank{r}").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("algo,hardware,metric", [("prime", "ddp_cpu", "prime/prm_updates"),
                                                  ("oreal", "ddp_cpu", "oreal/rm_loss"),
                                                  ("prime", "fsdp_cpu", "prime/prm_updates")])
def test_aux_model_identical_on_every_rank_after_a_step(algo, hardware, metric, tmp_path):
    r0, r1 = run(tmp_path, f"experiment={algo}_tiny", f"hardware={hardware}")
    assert r0["aux_before"] and r0["aux_before"].keys() == r0["aux_after"].keys()
    assert metric in r0["rows"][0]  # the aux model took its optimiser step
    for r in (r0, r1):  # ... and it changed its weights on every rank
        assert any(r["aux_before"][k] != r["aux_after"][k] for k in r["aux_after"])
    if hardware == "ddp_cpu":  # replicated copies: equal to the last bit
        assert r0["aux_before"] == r1["aux_before"]
        assert r0["aux_after"] == r1["aux_after"]
