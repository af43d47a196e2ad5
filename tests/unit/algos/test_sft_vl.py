"""algo=sft on image prompts (experiment=sft_tiny_vl_puzzles, how the tiny_vl_puzzles warm start is made): each
row carries its puzzle's pixel rows, the prompt's image placeholder is expanded to one token per merged patch,
only the worked solution (+ EOS) is in the loss, and the vision tower gets gradient."""
from __future__ import annotations

import pytest
import torch

from steprl import core
from steprl.models.vision import IMAGE_TOKEN, vision_forward_kwargs
from steprl.train import build
from tests.helpers import compose_train


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    cfg = compose_train(["experiment=sft_tiny_vl_puzzles", "logger=none", "callbacks.progress_bar=null"],
                        tmp_path_factory.mktemp("sft_vl"))
    return build(cfg)[0]


def test_sft_rows_carry_the_images(m):
    batch = [m.task.sample("train", i) for i in range(3)]
    ids, att, lm = m.encode(batch)
    pad = m.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert len(m._pix) == len(m._grids) == 3
    for r, s in enumerate(batch):
        pv, grid = m.processor.images(s.images)
        assert torch.equal(m._pix[r], pv) and int((ids[r] == pad).sum()) == int(grid.prod()) // 4
        sol = m.tokenizer(s.solution, add_special_tokens=False)["input_ids"] + [m.tokenizer.eos_token_id]
        assert ids[r][lm[r].bool()].tolist() == sol  # the loss covers the solution and EOS, nothing else
    vis = vision_forward_kwargs(m.policy, ids, m._pix, m._grids)
    logits = m.policy(input_ids=ids, attention_mask=att, **vis).logits[:, :-1].float()
    loss = core.aggregate_loss(-core.logprobs_from_logits(logits, ids[:, 1:]), lm[:, 1:], "token-mean",
                               num_tokens=lm[:, 1:].sum())
    loss.backward()
    grads = [p.grad for n, p in m.policy.named_parameters() if "visual" in n]
    assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in grads)
    m.policy.zero_grad(set_to_none=True)


def test_text_batches_keep_no_vision_rows(m):
    from steprl.rollout.types import Sample

    m.encode([Sample(prompt="1+1=", solution="2")])
    assert m._pix is None and m._grids is None
