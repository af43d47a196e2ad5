"""PROPA's SFT phase is the paper's (issue 15 item 7): a fresh LoRA adapter (r 8, alpha 32) at lr 1e-4 with 5 %
warm-up, cosine decay and weight decay 0.1, merged into the policy after the phase; with the adapter off the full
weights train at 1e-5 by default."""
from __future__ import annotations

import pytest
import torch

from steprl.rollout.types import Sample
from steprl.train import build
from tests.helpers import compose_train

Q = Sample(prompt="3+4-2=\n", answer="5", solution="3+4-2=7-2\n7-2=5\n#### 5", meta={"expression": "3+4-2"})


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    cfg = compose_train(["experiment=propa_tiny", "logger=none", "callbacks.progress_bar=null"],
                        tmp_path_factory.mktemp("propa_sft"))
    return build(cfg)[0]


def _snapshot(m):
    return {n: p.detach().clone() for n, p in m.policy.named_parameters()}


def _restore(m, snap):
    with torch.no_grad():
        for n, p in m.policy.named_parameters():
            p.copy_(snap[n])


def test_defaults_are_the_papers(m):
    c = m.sft_cfg
    assert c["lora"] == {"r": 8, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
    assert (c["warmup_ratio"], c["scheduler"], c["weight_decay"]) == (0.05, "cosine", 0.1)
    assert m.sft_lr() == 1e-4


def test_lora_phase_changes_linear_weights_by_rank_8_and_merges(m):
    """Each adapted linear weight moves by (alpha / r) B A: a matrix of rank <= 8; embeddings and norms do not
    move; afterwards the policy has no adapter, the same parameter tensors, all trainable again."""
    snap = _snapshot(m)
    ids = [id(p) for p in m.policy.parameters()]
    names = [n for n, _ in m.policy.named_parameters()]
    out = m.sft_phase([Q, Q, Q, Q, Q])  # 15 examples, micro-batch 8: 2 steps (warm-up 1: lr 0, then 1e-4)
    assert out["propa/sft_examples"] == 15 and out["propa/sft_lr"] == 1e-4
    assert [n for n, _ in m.policy.named_parameters()] == names and [id(p) for p in m.policy.parameters()] == ids
    assert not hasattr(m.policy, "peft_config") and not any("lora" in n for n, _ in m.policy.named_modules())
    assert all(p.requires_grad for p in m.policy.parameters()) and all(p.grad is None for p in m.policy.parameters())
    moved = 0
    for n, p in m.policy.named_parameters():
        d = (p.detach() - snap[n]).double()
        if d.dim() == 2 and min(d.shape) > 8 and "embed" not in n and "lm_head" not in n:
            if d.abs().max() > 0:
                moved += 1
                # (float32 rounding of W + BA adds noise ~1e-5 of the update's largest singular value)
                assert torch.linalg.matrix_rank(d, rtol=1e-3) <= 8, n
        elif "embed" in n or d.dim() == 1:
            assert torch.equal(p.detach(), snap[n]), n
    assert moved > 0
    # a second phase adds a fresh adapter again (the first one is gone)
    m.sft_phase([Q])
    assert not hasattr(m.policy, "peft_config")
    _restore(m, snap)


def test_full_weight_phase_defaults_to_1e_5(tmp_path):
    cfg = compose_train(["experiment=propa_tiny", "logger=none", "callbacks.progress_bar=null", "algo.sft.lora=null"],
                        tmp_path)
    m = build(cfg)[0]
    assert m.sft_lr() == 1e-5
    snap = _snapshot(m)
    out = m.sft_phase([Q, Q, Q, Q, Q])
    assert out["propa/sft_lr"] == 1e-5
    # full weights: the token embeddings of the solution's tokens move too
    now = dict(m.policy.named_parameters())
    emb = [n for n in snap if "embed_tokens" in n][0]
    assert not torch.equal(now[emb].detach(), snap[emb])
    q = "model.layers.0.self_attn.q_proj.weight"  # and a linear weight moves by a full-rank update
    assert torch.linalg.matrix_rank((now[q].detach() - snap[q]).double(), rtol=1e-3) > 8
