"""Our side of ``bench/vs_trl.py`` drives the engine's real step: two steps of the small config, with the
generation phase timed through the collector and the step's token counts read from Lightning's outputs.
(It broke once when the engine's ``collect`` moved into ``module.collector``; this keeps the benchmark honest.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))
import vs_trl  # noqa: E402


@pytest.mark.slow  # ~35 s of CPU: builds the engine and runs two steps
def test_ours_runs_two_steps_and_times_generation(tmp_path):
    torch.manual_seed(0)
    w = vs_trl.workload("small", None, None, tmp_path)
    w.prompts, w.micro = 2, 2 * vs_trl.G  # 2 prompts x G rows in one micro-batch: the shape is the point, not the size
    # --ours: Hydra overrides for our side only (here the padded update instead of the packed default)
    ours = vs_trl.Ours(w, 0, tmp_path, extra=("batch.packed=false",))
    assert ours.module.batch_cfg["packed"] is False
    times = ours.run(2)
    assert len(times) == 2 and all(t > 0 for t in times)
    # fixed-length config: every row generates exactly NEW_TOKENS tokens
    assert ours.tokens == [2 * vs_trl.G * vs_trl.NEW_TOKENS] * 2
    # the collector was wrapped: generation + scoring took part of each step's CPU time, never more than all of it
    assert len(ours.phase.cpu) == 2
    assert all(0 < g <= c for g, c in zip(ours.phase.cpu, ours.cpu_times))
