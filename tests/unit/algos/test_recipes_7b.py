"""The 7B recipes ``ppr_7b`` and ``e_grpo_7b`` carry their papers' hyper-parameters (issue 15), asserted the way the
PRIME and OREAL recipe tests do; plus the keys this issue added (the critic's own grad clip, the loss's log-prob
temperature following the rollout's, the divergence guard)."""
from __future__ import annotations

from steprl.config import check_config
from tests.helpers import compose_train


def test_ppr_7b_recipe(tmp_path):
    c = compose_train(["experiment=ppr_7b", "logger=none"], tmp_path)
    assert c.model.path == "Qwen/Qwen2.5-7B" and c.algo._target_ == "steprl.algos.ppr.PPR"
    b = check_config(c)
    assert (c.batch.prompts_per_step, c.batch.samples_per_prompt, c.batch.minibatch_size) == (512, 1, 256)
    assert b["rollouts_per_step"] == 512 and b["updates_per_step"] == 2
    assert c.optim.lr == 1e-6 and c.algo.critic_lr == 1e-5 and c.optim.weight_decay == 0.01
    assert c.optim.warmup_steps == 286 and c.optim.max_grad_norm == 1.0 and c.trainer.max_steps == 501
    assert c.algo.critic.grad_clip == 1.0                      # the critic clipped on its own (verl)
    assert c.algo.kl.coef == 0.0 and c.algo.kl.estimator == "k1" and c.algo.kl.in_reward is True
    assert c.algo.loss.clip_eps_low == 0.2 and c.algo.loss.entropy_coef == 0.001 and c.algo.value_clip == 0.5
    assert c.advantage.gamma == 1.0 and c.advantage.lam == 1.0 and c.advantage.whiten is True
    assert c.algo.ppr.beta == 1.0 and c.judge.openai.model == "rm"
    assert c.task.topk == 3 and c.task.max_turns == 2
    assert c.rollout.temperature == 1.0 and c.rollout.top_p == 0.95 and c.rollout.max_new_tokens == 500
    assert c.algo.loss.logprob_temperature is None and c.algo.max_consecutive_skips == 10


def test_e_grpo_7b_recipe(tmp_path):
    c = compose_train(["experiment=e_grpo_7b", "logger=none"], tmp_path)
    assert c.algo._target_ == "steprl.algos.e_grpo.EGRPO" and "Qwen2.5-7B" in c.model.path
    b = check_config(c)
    assert (c.batch.prompts_per_step, c.batch.samples_per_prompt) == (64, 8)
    assert b["rollouts_per_step"] == 512 and b["updates_per_step"] == 1   # one on-policy update per batch
    assert c.algo.e_grpo.alpha == 0.3 and c.algo.e_grpo.mask_over_length is True
    assert c.advantage.kind == "grpo" and c.advantage.eps == 1e-6     # unbiased std + 1e-6 (verl)
    assert c.algo.loss.clip_eps_low == 0.2 and c.algo.loss.clip_eps_high == 0.28 and c.algo.loss.agg == "token-mean"
    assert c.algo.kl.coef == 0.0
    assert c.optim.lr == 2e-6 and c.optim.max_grad_norm == 1.0 and c.trainer.max_steps == 80
    assert c.task.topk == 10 and c.task.max_turns == 40 and c.task.max_response_tokens == 30000
    assert c.algo.loss.logprob_temperature is None and c.algo.max_consecutive_skips == 10
