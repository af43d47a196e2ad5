"""Memory features end to end on CPU: a LoRA run (KL against the adapter-disabled base) changes only adapter
weights; an 8-bit AdamW run trains; gradient checkpointing gives the same loss."""
from __future__ import annotations

import math

import torch

from tests.e2e.test_train import run

FAST = ["experiment=grpo_tiny", "trainer.max_steps=1", "trainer.num_sanity_val_steps=0",
        "trainer.val_check_interval=100", "callbacks.model_checkpoint=null",
        "callbacks.sample_table=null", "torch_threads=1", "algo.loss.entropy_coef=0.01"]


def _weights(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.policy.named_parameters()}


def test_lora_run_changes_only_adapter_weights(tmp_path):
    from steprl.models import load_model

    base, _ = load_model(path="steprl:tiny_arith")
    rows, module = run([*FAST, "model.lora.r=4", "model.lora.alpha=8", "algo.kl.coef=0.05", "optim.lr=1e-2",
                        "algo.loss.entropy_coef=0.01"],
                       tmp_path)
    assert module.ref_policy is None and module.has_reference  # the reference is the adapter-disabled base
    assert math.isfinite(rows[0]["train/loss"]) and "train/kl" in rows[0]
    after = _weights(module)
    adapters = {n for n in after if "lora_" in n}
    assert adapters and all(module.policy.get_parameter(n).requires_grad for n in adapters)
    base_sd = base.state_dict()
    for name, w in after.items():
        if name in adapters:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(w, base_sd[key]), f"{name} changed"
    # B starts at 0; the entropy bonus gives it a gradient on any batch
    assert any(not torch.all(after[n] == 0) for n in adapters if "lora_B" in n)


def test_adamw8bit_run_trains(tmp_path):
    from steprl.models import load_model

    base, _ = load_model(path="steprl:tiny_arith")
    rows, module = run([*FAST, "optimizer=adamw8bit", "trainer.max_steps=2"], tmp_path)
    assert len(rows) == 2 and all(math.isfinite(r["train/loss"]) for r in rows)
    opt = module.optimizers().optimizer
    assert type(opt).__name__ == "AdamW8bit"
    big = max(module.policy.parameters(), key=lambda p: p.numel())
    assert opt.state[big]["state1"].dtype == torch.uint8
    moved = sum(float((p - base.state_dict()[n]).abs().sum()) for n, p in module.policy.named_parameters())
    assert moved > 0


def test_engine_logprob_gap_is_logged_every_step_and_tis_runs(tmp_path):
    """The HF engine returning its own sampling log-probs stands in for vLLM: the probe passes, the gap is
    logged each step (~0: same weights, same numerics) and the TIS-corrected loss trains."""
    rows, _ = run([*FAST, "trainer.max_steps=2", "rollout.return_logprobs=true", "rollout.tis_cap=2.0",
                   "rollout.probe_tol=1e-3"], tmp_path)
    assert len(rows) == 2
    for r in rows:
        assert 0.0 <= r["rollout/logprob_diff"] < 1e-4 and math.isfinite(r["train/loss"])
