"""PRIME and OREAL end to end on CPU: the tiny recipes train for 2 steps with their own metrics; the extra
models (implicit PRM, token RM) and their optimisers come back from a checkpoint; the paper recipes compose
with the papers' hyper-parameters; bad settings are rejected by key."""
from __future__ import annotations

import math

import pytest
import torch

from steprl.config import ConfigError
from steprl.train import build
from tests.e2e.test_train import Recorder
from tests.helpers import compose_train

COMMON = ["logger=none", "callbacks.progress_bar=null", "callbacks.sample_table=null", "trainer.max_steps=2",
          "trainer.val_check_interval=2", "callbacks.model_checkpoint.every_n_train_steps=2", "task.num_val=16"]


def fit(overrides, out, ckpt=None):
    cfg = compose_train([*COMMON, *overrides], out)
    module, data, trainer = build(cfg)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    return rec.rows, module


def _opt_state_equal(a: dict, b: dict) -> bool:
    sa, sb = a["state"], b["state"]
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k] if isinstance(sa[k][n], torch.Tensor))


def test_prime_tiny_trains_and_its_prm_comes_back_from_the_checkpoint(tmp_path):
    rows, module = fit(["experiment=prime_tiny", "algo.filters.acc_band=[0.0,1.0]"], tmp_path / "a")
    assert len(rows) == 2
    last = rows[-1]
    assert math.isfinite(last["train/loss"])
    for key in ("prime/prm_acc", "prime/prm_acc_abs", "prime/prm_loss", "prime/prm_grad_norm", "filter/truncated"):
        assert key in last, key
    assert 0.0 <= last["prime/prm_acc"] <= 1.0
    # the PRM trained (its weights left the starting checkpoint), the frozen reference did not
    start = build(compose_train([*COMMON, "experiment=prime_tiny"], tmp_path / "ref"))[0]
    moved = [not torch.equal(a, b) for a, b in zip(module.prm.parameters(), start.prm.parameters())]
    assert any(moved)
    assert all(torch.equal(a, b) for a, b in zip(module.prm_ref.parameters(), start.prm_ref.parameters()))
    assert all(p.grad is None for p in module.prm_ref.parameters())
    # resume at the saved step: PRM weights and its AdamW state are restored
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    _, resumed = fit(["experiment=prime_tiny", "algo.filters.acc_band=[0.0,1.0]"], tmp_path / "b", ckpt=str(ckpt))
    assert all(torch.equal(a, b) for a, b in zip(module.prm.parameters(), resumed.prm.parameters()))
    a, b = module.aux["prm_optimizer"].state_dict(), resumed.aux["prm_optimizer"].state_dict()
    assert a["state"] and _opt_state_equal(a, b)


def test_oreal_tiny_trains_its_token_rm_and_freezes_the_actor_first(tmp_path):
    rows, module = fit(["experiment=oreal_tiny", "algo.token_rm.actor_freeze_steps=1"], tmp_path / "a")
    assert len(rows) == 2
    assert rows[0]["oreal/actor_frozen"] == 1.0 and rows[0]["train/grad_norm"] == 0.0
    assert rows[1]["oreal/actor_frozen"] == 0.0
    assert all(math.isfinite(r["train/loss"]) for r in rows)
    # step 1 (frozen actor) trained only the token RM: its zero head left zero and the loss started at ln 2
    assert rows[0]["oreal/rm_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert module.token_rm.head.weight.abs().sum() > 0
    for key in ("oreal/rm_acc", "oreal/pos_frac", "oreal/pair_groups", "train/kl"):
        assert key in rows[-1], key
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    _, resumed = fit(["experiment=oreal_tiny", "algo.token_rm.actor_freeze_steps=1"], tmp_path / "b", ckpt=str(ckpt))
    assert torch.equal(module.token_rm.head.weight, resumed.token_rm.head.weight)
    a, b = module.aux["rm_optimizer"].state_dict(), resumed.aux["rm_optimizer"].state_dict()
    assert a["state"] and _opt_state_equal(a, b)
    assert module.aux["rm_scheduler"].state_dict()["last_epoch"] == resumed.aux["rm_scheduler"].state_dict()["last_epoch"]


def test_oreal_keeps_one_pair_per_mixed_group_with_the_full_group_advantage(tmp_path):
    cfg = compose_train([*COMMON, "experiment=oreal_tiny"], tmp_path)
    module, _, _ = build(cfg)
    from steprl.algos.step import Rewards, RowValues
    from steprl.rollout.types import Rollouts

    G, gids = 4, torch.arange(3).repeat_interleave(4)
    correct = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    n = len(gids)
    ro = Rollouts(torch.ones(n, 2, dtype=torch.long), torch.ones(n, 2, dtype=torch.long),
                  torch.ones(n, 3, dtype=torch.long), torch.ones(n, 3, dtype=torch.long),
                  torch.ones(n, 3, dtype=torch.long), torch.full((n, 3), -1), gids, torch.arange(n) // G,
                  [""] * n, ["stop"] * 11 + ["length"])
    rw = Rewards(correct, correct)
    R = torch.tensor([1.0, -1, -1, -1, 1, 1, 1, 1, 1, 1, -1, -1])  # the truncated last row counts as wrong
    keep = module.keep(ro, rw, RowValues(oreal_R=R, oreal_A=torch.zeros(n)))
    assert gids[keep].tolist() == [0, 0, 2, 2]
    assert sorted(R[keep].tolist()) == [-1, -1, 1, 1]


def test_paper_recipes_compose_with_the_papers_hyperparameters():
    p = compose_train(["experiment=prime_eurus7b", "task.path=/data/x.jsonl"])
    assert p.algo._target_.endswith("prime.PRIME") and p.model.path == "PRIME-RL/Eurus-2-7B-SFT"
    assert (p.batch.prompts_per_step, p.batch.samples_per_prompt, p.batch.minibatch_size) == (256, 4, 256)
    assert p.optim.lr == 5e-7 and p.reward.token.lr == 1e-6 and p.reward.token.beta == 0.05
    t = p.reward.token
    assert t.max_grad_norm == 10.0 and t.mini_batch_size == 256 and t["update"] == "after"
    assert list(p.algo.filters.acc_band) == [0.2, 0.8] and p.algo.filters.drop_truncated
    assert p.algo.kl.coef == 0.0 and p.algo.loss.clip_eps_low == 0.2
    assert p.advantage._target_.endswith("PrimeAdvantage") and p.advantage.form == "code" and p.advantage.whiten
    assert p.rollout.max_new_tokens == 3072 and p.rollout.temperature == 1.0
    assert "\\boxed{{Your answer}}" in p.task.prompt_template

    o = compose_train(["experiment=oreal_7b", "task.path=/data/x.jsonl"])
    assert o.algo._target_.endswith("oreal.OREAL") and o.model.path == "internlm/OREAL-7B-SFT"
    assert (o.batch.prompts_per_step, o.batch.samples_per_prompt, o.batch.minibatch_size) == (64, 16, 1024)
    assert o.optim.lr == 5e-7 and o.optim.scheduler == "cosine" and o.optim.min_lr_ratio == 0.2
    assert o.optim.warmup_steps == 10 and o.optim.weight_decay == 0.01
    assert o.algo.kl.coef == 0.01 and o.algo.kl.estimator == "k3"
    assert o.algo.oreal.eta == 0.5 and o.algo.oreal.shaping == "rloo" and o.algo.oreal.pair_filter
    assert o.algo.token_rm.lr == 2e-6 and o.algo.token_rm.actor_freeze_steps == 10
    assert o.rollout.temperature == 1.0 and o.rollout.top_p == 0.9 and o.trainer.max_steps == 90


@pytest.mark.parametrize("override,key", [
    ("reward.token.update=sometimes", "reward.token.update"),
    ("reward.token.ref_type=sft", "reward.token.ref_type"),
    ("reward.token.granularity=step", "reward.token.granularity"),
    ("advantage.form=book", "advantage.form"),
    ("batch.samples_per_prompt=1", "batch.samples_per_prompt"),
])
def test_prime_rejects_bad_settings_by_key(override, key, tmp_path):
    extra = ["batch.minibatch_size=4", "batch.micro_batch_size=4"] if "samples_per_prompt" in override else []
    cfg = compose_train([*COMMON, "experiment=prime_tiny", override, *extra], tmp_path)
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        build(cfg)


@pytest.mark.parametrize("override,key", [
    ("batch.minibatch_size=8", "batch.minibatch_size"),
    ("algo.oreal.shaping=ppo", "algo.oreal.shaping"),
    ("algo.filters.max_refill_rounds=2", "algo.filters.max_refill_rounds"),
])
def test_oreal_rejects_bad_settings_by_key(override, key, tmp_path):
    cfg = compose_train([*COMMON, "experiment=oreal_tiny", override], tmp_path)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(cfg)


@pytest.mark.parametrize("update,loss", [("after", "ce"), ("before", "ce"), ("none", "ce"), ("after", "dpo")])
def test_prime_prm_update_timing(update, loss, tmp_path):
    """after: rewards from the PRM before its step (single forward); before: from the updated PRM;
    none: the PRM never changes. ref_type=policy uses the policy's own log-probs as π_ref."""
    cfg = compose_train([*COMMON, "experiment=prime_tiny", f"reward.token.update={update}", f"reward.token.loss={loss}",
                         "reward.token.lr=1e-2", "reward.token.mini_batch_size=null",
                         "reward.token.updates_per_step=1"], tmp_path)
    module, _, _ = build(cfg)
    module.aux = module.make_aux_optimizers()
    ro = module.generate(["1+2+3=\n", "9-4+1=\n"], n=4)
    outcome = torch.tensor([1.0, 0, 1, 0, 0, 0, 1, 1])
    ref = module.logp_pass(module.prm_ref, ro, temperature=1.0)
    q_before = module.scorer.q(module, ro, ref)
    assert torch.allclose(q_before, torch.zeros_like(q_before), atol=1e-5)  # π_φ == π_ref at the start
    w0 = [p.detach().clone() for p in module.prm.parameters()]
    q, metrics = module.scorer.implicit_q(module, ro, ref, outcome)
    changed = any(not torch.equal(a, b) for a, b in zip(w0, module.prm.parameters()))
    assert changed == (update != "none")
    assert {"prime/prm_acc", "prime/prm_acc_abs"} <= set(metrics)
    if update == "before":
        assert torch.allclose(q, module.scorer.q(module, ro, ref), atol=1e-6) and q.abs().max() > 1e-4
    else:
        assert torch.allclose(q, q_before, atol=1e-5)
    policy_ref = module.logp_pass(module.policy, ro, temperature=1.0)
    assert torch.allclose(policy_ref, ref, atol=1e-5)  # before any policy step, ref_type=policy sees the same
