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
