"""Module-level checks (issue 15, "tests that must exist"): a fixed tiny batch through ``algo=prime``'s advantage path
and through ``algo=drm``'s scoring, against hand-computed values; PRIME's PRM : policy ratio (item 10)."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from steprl.algos.implicit_prm import ImplicitPRM
from steprl.algos.step import Step
from steprl.algos.base import Rewards
from steprl.rollout.types import Rollouts, Sample
from steprl.train import build
from tests.helpers import TINY_RELEVANCE, compose_train

Q = Sample(prompt="3+4-2=\n", answer="5", solution="3+4-2=7-2\n7-2=5\n#### 5", meta={"expression": "3+4-2"})


def _rollouts(m, texts, groups):
    tok = m.tokenizer
    P = tok(Q.prompt, add_special_tokens=False)["input_ids"]
    R = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    T = max(map(len, R))
    rid = torch.full((len(R), T), tok.pad_token_id)
    rm = torch.zeros(len(R), T, dtype=torch.long)
    for i, r in enumerate(R):
        rid[i, :len(r)], rm[i, :len(r)] = torch.tensor(r), 1
    pid = torch.tensor([P] * len(R))
    return Rollouts(prompt_ids=pid, prompt_mask=torch.ones_like(pid), response_ids=rid, response_mask=rm,
                    loss_mask=rm.clone(), step_ids=torch.zeros_like(rid), group_ids=torch.tensor(groups),
                    sample_idx=torch.zeros(len(R), dtype=torch.long), texts=list(texts), finish_reason=["stop"] * len(R))


def test_prime_advantage_path_by_hand(tmp_path):
    """Two groups of four equal-length responses, outcomes (1,0,0,0) and (1,1,0,0), frozen PRM (update=none): the
    PRM equals the reference, so q = 0 and the process rewards vanish. RLOO of the outcome (code form):
    group 0: 1 - 0 = 1, 0 - 1/3 = -1/3 (x3); group 1: 1 - 1/3 = 2/3 (x2), 0 - 2/3 = -2/3 (x2). On the last token,
    returns-to-go (gamma 1) put each row's value on all its L tokens. A third group of seven outcomes of 0.1 (code
    rewards) has returns of exactly 0 (item 4; float32 statistics gave -8.7e-9). Whitened over the 15L tokens: mean 0, unbiased
    variance L (1 + 3/9 + 4 * 4/9) / (15L - 1) = (28/9) L / (15L - 1)."""
    cfg = compose_train(["algo=prime", "logger=none", "task.num_val=8", "reward.token.update=none"], tmp_path)
    m = build(cfg)[0]
    texts = ["3+4-2=7-2\n7-2=5\n#### 5", "3+4-2=7-2\n7-2=4\n#### 4", "3+4-2=7-2\n7-2=6\n#### 6",
             "3+4-2=7-2\n7-2=3\n#### 3"]
    ro = _rollouts(m, texts * 2 + texts + texts[:3], [0] * 4 + [1] * 4 + [2] * 7)
    L = int(ro.loss_mask[0].sum())
    assert all(int(x) == L for x in ro.loss_mask.sum(-1))
    outcome = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0] + [0.1] * 7)
    step = Step([], ro, Rewards(outcome=outcome, correct=(outcome >= 1).float()))
    m.dense_rewards(step)  # the implicit PRM's token rewards
    adv, ret = m.advantages(step)
    v = torch.tensor([1, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3] + [0.0] * 7)
    sd = math.sqrt((28 / 9) * L / (15 * L - 1) + 1e-8)
    want = (v / sd)[:, None] * ro.loss_mask
    assert torch.allclose(adv, want, atol=1e-5)
    assert torch.allclose(ret, v[:, None] * ro.loss_mask, atol=1e-6)
    assert torch.equal(ret[8:], torch.zeros_like(ret[8:]))  # exactly 0 before whitening (which shifts every row)
    assert m.metrics.peek()["prime/process_reward"] == 0.0


def test_prime_prm_ratio_is_the_papers(tmp_path):
    """PRM lr = 2 x policy lr (1e-6 : 5e-7 in the paper) and 4 PRM updates per RL step by default."""
    cfg = compose_train(["algo=prime", "logger=none", "task.num_val=8"], tmp_path)
    m = build(cfg)[0]
    token = OmegaConf.to_container(cfg.reward.token)  # the scorer is reward.token's, handed to the module
    assert type(m.scorer) is ImplicitPRM and token.pop("_target_") == "steprl.algos.implicit_prm.ImplicitPRM"
    assert m.scorer.cfg == token
    assert m.scorer.lr(cfg.optim.lr) == pytest.approx(2 * cfg.optim.lr) == pytest.approx(6e-5)
    m.aux = m.make_aux_optimizers()
    assert m.aux["prm_optimizer"].param_groups[0]["lr"] == pytest.approx(6e-5)
    ro = _rollouts(m, ["3+4-2=7-2\n7-2=5\n#### 5", "#### 4"] * 4, [0, 0, 0, 0, 1, 1, 1, 1])
    ref = m.logp_pass(m.prm_ref, ro, temperature=1.0)
    _, metrics = m.scorer.train(m, ro, ref, torch.tensor([1.0, 0, 1, 0, 1, 0, 0, 1]), None)
    assert metrics["prime/prm_updates"] == 4.0  # 8 rollouts in mini-batches of 2
    assert m.scorer.mini_batch(128) == 32 and m.scorer.mini_batch(10) == 3


def test_drm_scoring_by_hand(tmp_path):
    """One group of three arith responses scored by DRM with the coherence dimension alone (weights 0, 0, 1; spans
    last_step: reasoning = all lines but the last; coherence = the rule judge's mean step correctness):
        A "3+4-2=7-2 / 7-2=5 / #### 5": coherence (1 + 1)/2 = 1,   outcome 1
        B "3+4-2=7-2 / 7-2=4 / #### 4": coherence (1 + 0)/2 = 0.5, outcome 0
        C "3+4-2=1 / #### 1":            coherence 0,               outcome 0
    z(coh) with population std sqrt(1/6): (±1.2247449, 0); R_DRM = that, z(R_DRM) = R_DRM / (1 + 1e-6);
    z(outcome): mean 1/3, std sqrt(2/9): (1.4142136, -0.7071068, -0.7071068). A = z(r_ans) + z(R_DRM).
    A second group of seven identical responses "3+4-2=7-2 / 7-2=4 / 4=4 / #### 4" (coherence 1/3, which float32
    cannot hold): advantage exactly 0 (item 4; the float32 z-scores of identical values were not 0)."""
    cfg = compose_train(["experiment=drm_tiny", "logger=none", "task.num_val=8", "algo.drm.weights=[0,0,1]",
                         TINY_RELEVANCE], tmp_path)
    m = build(cfg)[0]
    m.setup("fit")
    try:
        ro = _rollouts(m, ["3+4-2=7-2\n7-2=5\n#### 5", "3+4-2=7-2\n7-2=4\n#### 4", "3+4-2=1\n#### 1"]
                       + ["3+4-2=7-2\n7-2=4\n4=4\n#### 4"] * 7, [0, 0, 0] + [1] * 7)
        rw = m.score(ro, [Q])
        gv = m.group_values(ro, rw)
    finally:
        m.teardown("fit")
    assert rw.outcome.tolist() == [1.0, 0.0, 0.0] + [0.0] * 7
    assert m.metrics.peek()["drm/coherence"] == pytest.approx((1.5 + 7 / 3) / 10, abs=1e-6)
    zc = 0.5 / math.sqrt(1 / 6)
    assert gv["drm_r"][:3].tolist() == pytest.approx([zc, 0.0, -zc], abs=1e-5)
    assert torch.equal(gv["drm_adv"][3:], torch.zeros(7))
    assert not {"drm_adv", "drm_r"} & set(rw.seq)  # group values are not rewards
    first = torch.arange(3)
    ro, rw, gv = ro.select(first), rw.select(first), gv.select(first)
    zo = [(2 / 3) / math.sqrt(2 / 9), -(1 / 3) / math.sqrt(2 / 9), -(1 / 3) / math.sqrt(2 / 9)]
    want = [zo[0] + zc / (1 + 1e-6), zo[1], zo[2] - zc / (1 + 1e-6)]
    assert gv["drm_adv"].tolist() == pytest.approx(want, abs=1e-5)
    adv, _ = m.advantages(Step([], ro, rw, group_values=gv))
    assert torch.allclose(adv, torch.tensor(want)[:, None] * ro.loss_mask, atol=1e-5)
