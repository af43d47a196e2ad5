"""Supervised fine-tuning on a task's worked solutions (``algo=sft``): how the shipped warm start is made.

Loss: token-mean negative log-likelihood of ``solution + EOS`` given ``prompt``. A sample whose
``meta["solution_segments"]`` lists ``(text, written)`` pieces of its solution (an agent episode: the agent's
turns and the tool's observations, ``task=search_qa``) has each piece tokenised on its own, as the AgentLoop does,
and the loss on the written pieces only: the observations are context, never a target. A vision-language model reads
each sample's images with its prompt (``task=puzzles``: the puzzles' worked solutions).
"""
from __future__ import annotations

import torch

from steprl import core
from steprl.algos.policy import PolicyModule
from steprl.config import ConfigError
from steprl.models.vision import vision_forward_kwargs
from steprl.utils import dist as D


class SFT(PolicyModule):
    def __init__(self, model: dict, task, rollout, optim: dict, batch: dict, seed: int = 0,
                 val: dict | None = None, total_steps: int | None = None, max_consecutive_skips: int | None = 10):
        super().__init__(model, task, rollout, optim, seed=seed, val=val, total_steps=total_steps,
                         max_consecutive_skips=max_consecutive_skips)
        self.batch_cfg = dict(batch)

    def updates_total(self) -> int:
        return self.total_steps or 1

    def encode(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``input_ids, attention_mask, loss_mask`` (solution tokens and EOS), right-padded."""
        tok = self.tokenizer
        rows, masks = [], []
        self._pix = self._grids = None  # per-row vision inputs of the batch (a VL model on image prompts)
        if any(s.images for s in batch):
            if self.processor is None:
                raise ConfigError("the prompts have images but the model has no image processor: use a "
                                 "vision-language model (e.g. model=tiny_vl or model=qwen2_5_vl_3b)")
            vis = [self.processor.images(list(s.images)) for s in batch]
            self._pix, self._grids = [v[0] for v in vis], [v[1] for v in vis]
        for r, s in enumerate(batch):
            if not s.solution:
                raise ConfigError(f"algo=sft needs worked solutions; task {self.task.name!r} sample {s.uid!r} has none")
            prompt = s.prompt if self._grids is None else self.processor.expand(s.prompt, self._grids[r])
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            segments = s.meta.get("solution_segments") or [(s.solution, True)]
            if "".join(t for t, _ in segments) != s.solution:
                raise ConfigError(f"sample {s.uid!r}: meta['solution_segments'] do not join to its solution")
            a, m = [], []
            for text, written in segments:
                ids = tok(text, add_special_tokens=False)["input_ids"]
                a += ids
                m += [int(bool(written))] * len(ids)
            rows.append(p + a + [tok.eos_token_id])
            masks.append([0] * len(p) + m + [1])
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        lm = torch.zeros_like(ids, dtype=torch.float)
        for i, (r, m) in enumerate(zip(rows, masks)):
            ids[i, :len(r)] = torch.tensor(r)
            att[i, :len(r)] = 1
            lm[i, :len(m)] = torch.tensor(m, dtype=torch.float)
        return ids.to(self.device), att.to(self.device), lm.to(self.device)

    def training_step(self, batch, batch_idx):
        ids, att, lm = self.encode(batch)
        if self._trainer is not None and self.trainer.datamodule is not None:
            self.trainer.datamodule.mark_consumed(batch)
        mbs = min(self.batch_cfg.get("micro_batch_size") or len(batch), len(batch))
        n_tok = D.all_reduce(lm[:, 1:].sum())  # global over ranks: the loss of one process on the whole batch
        world = D.world_size()
        total = 0.0
        for i in range(0, len(batch), mbs):
            vis = {} if self._pix is None else vision_forward_kwargs(
                self.policy, ids[i:i + mbs], self._pix[i:i + mbs], self._grids[i:i + mbs])
            logits = self.policy(input_ids=ids[i:i + mbs], attention_mask=att[i:i + mbs],
                                 **vis).logits[:, :-1].float()
            nll = -core.logprobs_from_logits(logits, ids[i:i + mbs, 1:])
            loss = core.aggregate_loss(nll, lm[i:i + mbs, 1:], "token-mean", num_tokens=n_tok)
            self.manual_backward(loss * world)  # DDP / FSDP average gradients over ranks
            total += float(loss.detach())
        norm, _ = self.clip_and_step(last=True)
        self.log_metrics({"train/loss": total, "train/grad_norm": norm}, bar=("train/loss",))
