"""The documented warm-start recipe (README, "Warm start") at small scale: SFT, export, load, and it learned."""
from __future__ import annotations

import pytest
import torch

from steprl.export import export
from steprl.models import load_model
from steprl.train import build
from tests.helpers import compose_train


def test_sft_export_and_load(tmp_path):
    cfg = compose_train(["experiment=sft_tiny_arith", "logger=none", "callbacks.progress_bar=null",
                         "trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.num_sanity_val_steps=0",
                         "task.num_val=16", "batch.prompts_per_step=16", "batch.micro_batch_size=8"], tmp_path / "run")
    module, data, trainer = build(cfg)

    trainer.fit(module, datamodule=data)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()

    out = export(ckpt, tmp_path / "exported")
    model, tok = load_model(path=str(out))
    # the exported weights are the trained ones, not a fresh init
    trained = dict(module.policy.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, trained[name]), name
    # and the SFT loss went down on its own training data (the same batch, before and after)
    batch = [data._train[i] for i in range(16)]
    fresh, _ = load_model(tiny=dict(cfg.model.tiny), init_seed=0)
    ids, att, lm = module.encode(batch)

    def nll(m):
        with torch.no_grad():
            logp = torch.log_softmax(m(input_ids=ids, attention_mask=att).logits[:, :-1], -1)
            tok_lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
            return float(-(tok_lp * lm[:, 1:]).sum() / lm[:, 1:].sum())

    assert nll(model) < nll(fresh) - 0.5


def test_shipped_warm_start_loads():
    model, tok = load_model(path="steprl:tiny_arith")
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert tok.decode(tok("3+4=\n")["input_ids"]) == "3+4=\n"


def test_unknown_shipped_model_names_the_choices():
    with pytest.raises(FileNotFoundError, match="tiny_arith"):
        load_model(path="steprl:nope")


def _greedy(overrides, tmp_path, keep):
    """A recipe's warm start, greedy, on the held-out problems that ``keep(sample)`` selects."""
    cfg = compose_train(["logger=none", "callbacks.progress_bar=null", *overrides], tmp_path)
    module, data, _ = build(cfg)
    samples = [s for s in module.task.val_dataset() if keep(s)]
    return module, samples, module.generate([s.prompt for s in samples], n=1, greedy=True)


def test_long_chain_warm_start_solves_short_chains(tmp_path):
    """model=tiny_arith_long on task=arith_long: held-out chains of 2-4 terms (short, so fast) are often right
    (docs/testbed.md: 0.61 / 0.43 / 0.21 on 2 / 3 / 4 terms; the per-length numbers come from
    steprl.tasks.arith_eval)."""
    module, samples, ro = _greedy(["model=tiny_arith_long", "task=arith_long", "task.num_val=48",
                                   "rollout.max_new_tokens=64"], tmp_path, lambda s: s.meta["num_terms"] <= 4)
    acc = sum(module.task.verify(s, t) for s, t in zip(samples, ro.texts)) / len(samples)
    assert len(samples) >= 10 and acc > 0.15


def test_search_warm_start_finds_some_answers_and_misses_others(tmp_path):
    """model=tiny_search_qa on task=search_qa_tiny (the recipes of E-GRPO, PPR, EMPG, SALT): greedy on the first
    16 held-out questions it answers every one through the tool protocol and gets 12 right (0.766 on all 128,
    0.77 / 0.78 / 0.74 on 1 / 2 / 3 hops: docs/testbed.md), so RL has right and wrong episodes to compare."""
    module, samples, ro = _greedy(["experiment=e_grpo_tiny", "task.num_val=16"], tmp_path, lambda s: True)
    assert all(i["answered"] and i["format_errors"] == 0 for i in ro.info)
    assert sum(i["tool_calls"] > 0 for i in ro.info) == len(samples) == 16
    right = sum(module.task.verify(s, t) for s, t in zip(samples, ro.texts))
    assert 8 <= right <= 15


@pytest.mark.parametrize("packed", [True, False])
def test_search_episodes_are_trained_on_the_tokens_the_policy_chose(packed, tmp_path):
    """The loss's forward over a multi-turn episode (the agent's turns with the tool's documents spliced between
    them) sees what the rollout saw: every agent token of a greedy episode is the argmax of the training forward
    at its position. Log-probs at temperature 1e-3 put ~0 on the argmax and < -100 on any other token."""
    module, samples, ro = _greedy(["experiment=e_grpo_tiny", "task.num_val=16", f"batch.packed={packed}"],
                                  tmp_path, lambda s: True)
    with torch.no_grad():
        logp, _ = module.forward_logp(module.policy, ro, temperature=1e-3)
    agent = ro.loss_mask.bool()
    assert int(agent.sum()) > 16 * 10 and bool((ro.response_mask.bool() & ~agent).any())  # documents in between
    assert float(logp[agent].min()) > -1.0
