"""PPO / PPR clip the policy's and the critic's gradients separately (issue 15 item 3), each to its own max norm
(``optim.max_grad_norm``, ``algo.critic.grad_clip``), as verl and OpenRLHF do.

A hand-built batch whose value targets are 1000 (values start at 0, so the clipped value loss is ~0.5 * 1000^2):
the critic's gradient is orders of magnitude larger than the policy's. Clipped as one vector (the old code) the
policy's gradient would shrink by max_norm / total; clipped on its own it keeps min(own norm, max_grad_norm)."""
from __future__ import annotations

import pytest
import torch

from steprl.rollout.types import Rollouts
from steprl.train import build
from tests.helpers import compose_train


def _norm(params):
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))


@pytest.mark.parametrize("algo", ["ppo", "ppr"])
def test_policy_and_critic_are_clipped_on_their_own(algo, tmp_path):
    cfg = compose_train([f"algo={algo}", "logger=none", "task.num_val=8", "algo.critic.grad_clip=0.5",
                         "optim.max_grad_norm=1.0"], tmp_path)
    m = build(cfg)[0]
    tok = m.tokenizer
    p = torch.tensor([tok("3+4=\n", add_special_tokens=False)["input_ids"]] * 2)
    r = torch.tensor([tok("7\n#### 7", add_special_tokens=False)["input_ids"]] * 2)
    ones = torch.ones_like(r)
    ro = Rollouts(prompt_ids=p, prompt_mask=torch.ones_like(p), response_ids=r, response_mask=ones, loss_mask=ones,
                  step_ids=torch.zeros_like(r), group_ids=torch.tensor([0, 0]), sample_idx=torch.tensor([0, 0]),
                  texts=["", ""], finish_reason=["stop"] * 2)
    extras = {"values": torch.zeros(r.shape), "returns": torch.full(r.shape, 1000.0)}
    adv = torch.tensor([[1.0], [-1.0]]).expand(r.shape)
    loss, _ = m.micro_loss(ro, adv, extras, ones.sum(), 2)
    loss.backward()
    critic = list(m.critic.parameters())
    policy = [q for q in m.policy.parameters() if q.requires_grad]
    p_norm, c_norm = _norm(policy), _norm(critic)
    assert c_norm > 1000 * max(p_norm, 1e-3)  # the value loss dominates

    norms = m.clip_grad_groups(policy + critic)
    assert norms["policy"] == pytest.approx(p_norm, rel=1e-5) and norms["critic"] == pytest.approx(c_norm, rel=1e-5)
    assert _norm(policy) == pytest.approx(min(p_norm, 1.0), rel=1e-4)   # the policy's own norm (clipped at 1.0)
    assert _norm(critic) == pytest.approx(0.5, rel=1e-4)                 # the critic's, at algo.critic.grad_clip
    assert cfg.algo.critic.grad_clip == 0.5
