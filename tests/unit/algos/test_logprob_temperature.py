"""The loss's log-prob temperature is a key (issue 15 item 9): ``algo.loss.logprob_temperature`` (null: the rollout
engine's sampling temperature, as verl and TRL do); the PROPA and PC-GRPO recipes set 1.0 (PROPA's reference and
GRPO-CARE's confidence read log-probs at T = 1)."""
from __future__ import annotations

import pytest
import torch

from steprl.rollout.types import Rollouts
from steprl.train import build
from tests.helpers import compose_train


def _ro(tok):
    p = torch.tensor([tok("3+4=\n", add_special_tokens=False)["input_ids"]])
    r = torch.tensor([tok("7\n#### 7", add_special_tokens=False)["input_ids"]])
    one = torch.ones_like(r)
    return Rollouts(prompt_ids=p, prompt_mask=torch.ones_like(p), response_ids=r, response_mask=one, loss_mask=one,
                    step_ids=torch.zeros_like(r), group_ids=torch.zeros(1, dtype=torch.long),
                    sample_idx=torch.zeros(1, dtype=torch.long), texts=[""], finish_reason=["stop"])


def test_logprob_temperature_key(tmp_path):
    """Rollouts sampled at T = 0.5: by default the loss reads log-probs at 0.5; with the key at 1.0 at T = 1, i.e.
    log_softmax(z) instead of log_softmax(z / 0.5), checked against an explicit forward of the model."""
    base = ["algo=grpo", "logger=none", "task.num_val=8", "rollout.temperature=0.5"]
    m = build(compose_train(base, tmp_path / "a"))[0]
    ro = _ro(m.tokenizer)
    ids = torch.cat([ro.prompt_ids, ro.response_ids], 1)
    with torch.no_grad():
        z = m.policy(input_ids=ids).logits[:, ro.prompt_ids.shape[1] - 1:-1].float()
    pick = lambda lp: lp.gather(-1, ro.response_ids[..., None])[..., 0]  # noqa: E731
    at_half, at_one = pick(torch.log_softmax(z / 0.5, -1)), pick(torch.log_softmax(z, -1))
    assert not torch.allclose(at_half, at_one, atol=1e-3)
    assert torch.allclose(m.logp_pass(m.policy, ro), at_half, atol=1e-4)
    m1 = build(compose_train([*base, "algo.loss.logprob_temperature=1.0"], tmp_path / "b"))[0]
    assert torch.allclose(m1.logp_pass(m1.policy, ro), at_one, atol=1e-4)


@pytest.mark.parametrize("overrides", [["algo=propa"], ["algo=pc_grpo"], ["experiment=propa_tiny"],
                                       ["experiment=pc_grpo_tiny"], ["experiment=pc_grpo_qwen2_5_vl_3b_mix"]])
def test_propa_and_pc_grpo_recipes_read_logprobs_at_t1(overrides, tmp_path):
    cfg = compose_train([*overrides, "logger=none"], tmp_path)
    assert cfg.algo.loss.logprob_temperature == 1.0
    assert compose_train(["algo=grpo", "logger=none"], tmp_path).algo.loss.logprob_temperature is None
