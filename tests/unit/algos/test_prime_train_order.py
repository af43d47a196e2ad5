"""When PRIME's implicit PRM trains (``reward.token.train_order``): in the dense-rewards stage before the policy's
update (``before_policy``, the paper's Algorithm 1) or in the after-update stage (``after_policy``)."""
from __future__ import annotations

import pytest
import torch

from steprl.algos.step import Rewards, Step
from steprl.config import ConfigError
from steprl.train import build
from tests.helpers import compose_train
from tests.unit.algos.test_prime_drm_module import _rollouts
from tests.unit.engine.record_golden import EXTRA, OVERRIDES

TEXTS = ["3+4-2=7-2\n7-2=5\n#### 5", "3+4-2=7-2\n7-2=4\n#### 4", "3+4-2=1\n#### 1", "#### 5"]
OUTCOME = torch.tensor([1.0, 0, 0, 1, 1, 0, 1, 0])
# β q unscaled (norm none), every token its own reward, a PRM lr that moves it visibly, 2 PRM mini-batches of 4 rows
PRM = ["reward.token.norm=none", "reward.token.granularity=token", "reward.token.lr=1e-2",
       "reward.token.mini_batch_size=null",
       "reward.token.updates_per_step=2"]


def _module(order: str, tmp_path):
    m = build(compose_train(["algo=prime", "logger=none", "task.num_val=8", *PRM, f"reward.token.train_order={order}"],
                            tmp_path / order))[0]
    m.aux = m.make_aux_optimizers()
    return m


def _params(m):
    return [p.detach().clone() for p in m.prm.parameters()]


def test_prm_trains_before_or_after_the_policy(tmp_path):
    """Step t's rows 0-3 and 4-7 are the PRM's two mini-batches. ``after_policy``: the dense-rewards stage leaves
    the PRM as it is and every row's reward is β q_t of that PRM (the PRM before its step-t update); the PRM then
    trains in ``after_update``. ``before_policy``: the PRM has trained on both mini-batches when the stage ends;
    the first mini-batch's rewards come from the PRM before its update, the second's from the PRM after one
    optimiser step on the first. Both orders take the same PRM optimiser steps on the same data."""
    after, before = _module("after_policy", tmp_path), _module("before_policy", tmp_path)
    ro = _rollouts(after, TEXTS * 2, [0] * 4 + [1] * 4)
    w0 = _params(after)
    assert all(torch.equal(a, b) for a, b in zip(w0, _params(before)))
    beta, mask = 0.05, ro.loss_mask
    q0 = after.scorer.q(after, ro, after.logp_pass(after.prm_ref, ro, temperature=1.0))

    step_a = Step([], ro, Rewards(outcome=OUTCOME, correct=OUTCOME))
    after.dense_rewards(step_a)
    assert all(torch.equal(a, b) for a, b in zip(w0, _params(after)))  # not trained yet
    assert torch.allclose(step_a.rewards.token, beta * q0, atol=1e-7)
    after.after_update(step_a)
    w_after = _params(after)
    assert any(not torch.equal(a, b) for a, b in zip(w0, w_after))
    assert after.metrics.peek()["prime/prm_updates"] == 2.0

    step_b = Step([], ro, Rewards(outcome=OUTCOME, correct=OUTCOME))
    before.dense_rewards(step_b)
    assert before.metrics.peek()["prime/prm_updates"] == 2.0
    r = step_b.rewards.token
    assert torch.allclose(r[:4], beta * q0[:4], atol=1e-7)       # mini-batch 1: the PRM before its update
    assert (r[4:] - beta * q0[4:]).abs().max() > 1e-3             # mini-batch 2: after one PRM step
    before.after_update(step_b)                                   # nothing more to train
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(w_after, _params(before)))
    assert (r * mask).abs().sum() > 0


def _numbers(order: str, updates: int, tmp_path) -> list[tuple[float, float]]:
    from tests.helpers import Recorder

    cfg = compose_train(["experiment=prime_tiny", *OVERRIDES, *EXTRA.get("prime", []), "batch.prompts_per_step=4",
                         "batch.minibatch_size=32", "batch.micro_batch_size=32",
                         f"reward.token.updates_per_step={updates}", f"reward.token.train_order={order}"],
                        tmp_path / f"{order}{updates}")
    module, data, trainer = build(cfg)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.fit(module, datamodule=data)
    return [(r["train/loss"], r["train/grad_norm"], r["prime/prm_loss"]) for r in rec.rows]


def test_orders_agree_with_one_prm_update_a_step(tmp_path):
    """With one PRM mini-batch a step the single forward scores every row with the PRM before its update in
    both orders, and the PRM takes the same step: two RL steps of the recipe log identical numbers. With two
    mini-batches ``before_policy`` scores half the rows with a PRM that has taken a step: the numbers differ."""
    assert _numbers("after_policy", 1, tmp_path) == _numbers("before_policy", 1, tmp_path)
    assert _numbers("after_policy", 2, tmp_path) != _numbers("before_policy", 2, tmp_path)


def test_after_policy_needs_the_single_forward(tmp_path):
    cfg = compose_train(["algo=prime", "logger=none", "reward.token.train_order=after_policy",
                         "reward.token.update=before"],
                        tmp_path)
    with pytest.raises(ConfigError, match=r"reward\.token\.train_order=after_policy .* reward\.token\.update=after"):
        build(cfg)
    cfg = compose_train(["algo=prime", "logger=none", "reward.token.train_order=later"], tmp_path)
    with pytest.raises(ConfigError, match=r"reward\.token\.train_order='later' is not one of"):
        build(cfg)
