"""PROPA (``algo=propa``): MCTS over reasoning steps, sibling GRPO on node values, interleaved SFT, and a PRM.

One training step = one batch of the official outer loop (spec §3.5, ``grpo_train_with_MCTS_iterative_*.sh``):

    trees  = MCTS on every question (steprl.core.mcts), steps sampled one at a time from the current policy
             (HF engine with a stop at the end of a step: a newline on ``arith``)
    GRPO   on sibling groups: for each expanded node of a tree with a correct path (root W > 0), its k children are
           one group sharing the node's prefix as prompt; reward = log_boost(Q) (0 if unvisited); the stored child
           texts are replayed as completions (no resampling); groups with all-0 / all-1 / range < 0.1 labels skipped
    SFT    on the gold solution, one example per step, of the questions whose tree found no correct path
    PRM    a value head on the policy's trunk, regressed (MSE) on log_boost(Q) of every node (N = 0 rule)

At inference the PRM can pick each step among k samples (``inference.mode=prm_best_of_k``).
The group size k is ``batch.samples_per_prompt`` (the expansion width).

Vision (``task=puzzles`` with a VL model): every prompt of a question carries its images. The expansions and
simulations are generated from the image prompts, the sibling-group rollouts, the SFT rows and the PRM inputs
carry the question's ``pixel_values`` / ``image_grid_thw`` per row (the rows of one question share one tensor),
and the PRM's trunk is the policy's whole multimodal model, so it reads the image too (the paper's PRM input is
``"<image>" + steps``). A puzzle step is one line; the line with ``<answer>`` is the final step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import re

import torch

from steprl import core
from steprl.algos.aux_model import inner_step
from steprl.algos.base import RLModule, Rewards
from steprl.algos.propa.parts import EngineStepPolicy, PRMHead, TreeSearch, check_final_step, final_step_test
from steprl.algos.step import Step
from steprl.config import ConfigError, node_defaults
from steprl.core.mcts import Node, mcts, prm_examples, sibling_groups
from steprl.models.vision import vision_forward_kwargs
from steprl.rollout.types import Rollouts, Sample
from steprl.utils import dist as D

STEP_FORMATS = ("continue", "propa")
# The SFT phase as the paper trains it (LoRA r 8, alpha 32 at 1e-4, 5 % warm-up, cosine decay, weight decay 0.1);
# lr None: 1e-4 with the adapter, 1e-5 on full weights (the full-weight default of the library PROPA used).
SFT_LR = {"lora": 1e-4, "full": 1e-5}
INFERENCE_MODES = ("greedy", "prm_best_of_k")

class PROPA(RLModule):
    """``mcts``: iterations, c, uct_factor (2 = code, 1 = paper), max_depth, simulate_all, expand_temperature /
    top_k / top_p, step_stop, step_max_tokens, simulate_greedy, simulate_max_tokens, terminal_regex (null: the
    task's own final step, ``parts.final_step_test``; a regex overrides it), step_format
    (continue | propa), boost_a, min_label_range. ``sft``: enabled, lr (None: 1e-4 with the adapter, 1e-5 on full
    weights), epochs, micro_batch_size, warmup_ratio, scheduler (cosine | constant), weight_decay, lora (r, alpha,
    dropout, target_modules; null or r 0: full weights). ``prm``: enabled,
    lr, epochs, micro_batch_size. ``inference``: mode (greedy | prm_best_of_k), k, max_steps, temperature."""

    def __init__(self, *args, mcts: dict | None = None, sft: dict | None = None, prm: dict | None = None,
                 inference: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mcts_cfg = {**node_defaults("propa", "mcts"), **(mcts or {})}
        sft_defaults = node_defaults("propa", "sft")  # conf/algo/propa.yaml
        self.sft_cfg = {**sft_defaults, **(sft or {})}
        unknown = set(self.sft_cfg) - set(sft_defaults)
        if unknown:
            raise ConfigError(f"algo.sft has unknown keys {sorted(unknown)}; valid: {sorted(sft_defaults)}")
        lora = self.sft_cfg["lora"]
        if lora is not None and set(lora) - {"r", "alpha", "dropout", "target_modules"}:
            raise ConfigError(f"algo.sft.lora has unknown keys {sorted(set(lora) - {'r', 'alpha', 'dropout', 'target_modules'})}")
        if self.sft_cfg["scheduler"] not in ("cosine", "constant"):
            raise ConfigError(f"algo.sft.scheduler={self.sft_cfg['scheduler']!r} is not one of ['cosine', 'constant']")
        self.prm_cfg = {**node_defaults("propa", "prm"), **(prm or {})}
        self.inf_cfg = {**node_defaults("propa", "inference"), **(inference or {})}
        if self.mcts_cfg["step_format"] not in STEP_FORMATS:
            raise ConfigError(f"algo.mcts.step_format={self.mcts_cfg['step_format']!r} is not one of "
                              f"{list(STEP_FORMATS)}")
        if self.inf_cfg["mode"] not in INFERENCE_MODES:
            raise ConfigError(f"algo.inference.mode={self.inf_cfg['mode']!r} is not one of {list(INFERENCE_MODES)}")
        if self.inf_cfg["mode"] == "prm_best_of_k" and not self.prm_cfg["enabled"]:
            raise ConfigError("algo.inference.mode=prm_best_of_k needs the PRM: set algo.prm.enabled=true")
        for key in ("iterations", "max_depth", "step_max_tokens", "simulate_max_tokens"):
            if int(self.mcts_cfg[key]) < 1:
                raise ConfigError(f"algo.mcts.{key} must be >= 1, got {self.mcts_cfg[key]}")
        override = self.mcts_cfg["terminal_regex"] or None
        try:
            self.is_final_step = final_step_test(self.task, override)
        except re.error as e:
            raise ConfigError(f"algo.mcts.terminal_regex={override!r} is not a valid regular expression: {e}") from e
        check_final_step(self.task, self.task.splitter, self.is_final_step, override)
        if self.batch_cfg["samples_per_prompt"] < 2:
            raise ConfigError("algo=propa: batch.samples_per_prompt is the expansion width k (the sibling group size)"
                             " and must be >= 2")
        # the PRM: a scalar head on a copy of the policy's trunk (PPO's critic architecture), read at the last token
        self.prm = PRMHead(self.policy) if self.prm_cfg["enabled"] else None
        self.collector = TreeSearch()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if D.world_size() > 1:
            raise ConfigError(
                "algo=propa runs on one process only (hardware=cpu or gpu): its tree search, SFT phase and PRM "
                "phase run a different number of forwards / optimiser steps on each rank, with optimisers of "
                f"their own that no rank synchronises (got {D.world_size()} ranks)")

    # ------------------------------------------------------------------------------------ formats
    def step_prompt(self, sample: Sample, steps: list[str]) -> str:
        """The prompt that asks for the next step. ``continue``: the task prompt followed by the steps so far, one
        per line (the model's own solution format, e.g. ``arith``); ``propa``: the paper's
        "{q} First step:" / "{q} Existing steps: s1 s2 ... Next step:"."""
        if self.mcts_cfg["step_format"] == "continue":
            return sample.prompt + "".join(s + "\n" for s in steps)
        if not steps:
            return f"{sample.prompt} First step:"
        return f"{sample.prompt} Existing steps: {' '.join(steps)} Next step:"

    def vision_rows(self, prompts: list[str], images: list | None):
        """The prompts with their image placeholders expanded to one token per merged patch, and each row's
        ``pixel_values`` / ``image_grid_thw`` (rows given the same image list share one tensor); the prompts
        unchanged and ``None, None`` when no row has an image."""
        if not images or not any(images):
            return list(prompts), None, None
        if self.processor is None:
            raise ConfigError("the prompts have images but the model has no image processor: use a vision-language "
                             "model (e.g. model=tiny_vl or model=qwen2_5_vl_3b)")
        cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        out, pix, grids = [], [], []
        for p, ims in zip(prompts, images):
            if id(ims) not in cache:
                cache[id(ims)] = self.processor.images(list(ims or []))
            pv, g = cache[id(ims)]
            out.append(self.processor.expand(p, g))
            pix.append(pv)
            grids.append(g)
        return out, pix, grids

    def encode_pairs(self, prompts: list[str], completions: list[str], eos: list[bool], images: list | None = None):
        """Left-padded prompts and right-padded completions (+ EOS where the step ended the solution); with
        ``images`` (one list per row) also the rows' pixel values and image grids (else ``None, None``)."""
        tok, dev = self.tokenizer, self.device
        prompts, pix, grids = self.vision_rows(prompts, images)
        P = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        C = [tok(c, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else []) for c, e in
             zip(completions, eos)]
        C = [c or [tok.eos_token_id] for c in C]
        pw, cw = max(map(len, P)), max(map(len, C))
        pid = torch.full((len(P), pw), tok.pad_token_id, dtype=torch.long)
        pm = torch.zeros_like(pid)
        rid = torch.full((len(C), cw), tok.pad_token_id, dtype=torch.long)
        rm = torch.zeros_like(rid)
        for i, (p, c) in enumerate(zip(P, C)):
            pid[i, pw - len(p):], pm[i, pw - len(p):] = torch.tensor(p), 1
            rid[i, :len(c)], rm[i, :len(c)] = torch.tensor(c), 1
        return pid.to(dev), pm.to(dev), rid.to(dev), rm.to(dev), pix, grids

    # ------------------------------------------------------------------------------------ search -> groups
    def search(self, samples: list[Sample]) -> tuple[list[Node], dict[str, float]]:
        c = self.mcts_cfg
        roots = [Node() for _ in samples]
        pol = EngineStepPolicy(self, samples)
        stats = mcts(roots, pol, iterations=int(c["iterations"]),
                     k=self.batch_cfg["samples_per_prompt"], max_depth=int(c["max_depth"]), c=float(c["c"]),
                     factor=float(c["uct_factor"]), simulate_all=bool(c["simulate_all"]))
        stats["prompts"], stats["image_prompts"] = pol.prompts, pol.image_prompts
        return roots, stats

    def tree_batch(self, trees: list[tuple[Sample, Node]]) -> tuple[Rollouts, Rewards]:
        """The sibling GRPO groups of the trees as rollouts: prompt = the parent's prefix, completion = the stored
        child text (replayed, not resampled), reward = the child's label."""
        c = self.mcts_cfg
        prompts, comps, eos, labels, gids, sidx, images = [], [], [], [], [], [], []
        n_groups = 0
        for q, (s, root) in enumerate(trees):
            for node, lab in sibling_groups(root, float(c["boost_a"]), float(c["min_label_range"])):
                prefix = self.step_prompt(s, node.steps())
                for ch, y in zip(node.children, lab):
                    prompts.append(prefix)
                    comps.append(ch.completion)
                    eos.append(ch.eos)
                    labels.append(y)
                    gids.append(n_groups)
                    sidx.append(q)
                    images.append(s.images)
                n_groups += 1
        pix = grids = None
        if prompts:
            pid, pm, rid, rm, pix, grids = self.encode_pairs(prompts, comps, eos, images)
        else:
            pid = pm = rid = rm = torch.zeros((0, 1), dtype=torch.long, device=self.device)
        n = pid.shape[0]
        ro = Rollouts(prompt_ids=pid, prompt_mask=pm, response_ids=rid, response_mask=rm, loss_mask=rm.clone(),
                      step_ids=torch.where(rm.bool(), 0, -1),
                      group_ids=torch.tensor(gids, dtype=torch.long, device=self.device),
                      sample_idx=torch.tensor(sidx, dtype=torch.long, device=self.device), texts=comps,
                      finish_reason=["stop" if e else "step" for e in eos], pixel_values=pix, image_grid_thw=grids)
        y = torch.tensor(labels, dtype=torch.float, device=self.device).reshape(n)
        return ro, Rewards(outcome=y, correct=(y >= 1.0 - 1e-6).float())

    def rollout_metrics(self, ro: Rollouts, rw: Rewards) -> dict[str, float]:
        m = {}  # train/acc: the share of questions whose search found a correct answer (TreeSearch)
        m["train/reward"] = float(rw.outcome.mean()) if len(rw.outcome) else 0.0  # mean sibling label
        m["train/response_len"] = float(ro.response_mask.sum(-1).float().mean()) if len(ro) else 0.0
        return m

    # ------------------------------------------------------------------------------------ SFT and PRM phases
    def after_update(self, step: Step) -> None:
        """After GRPO on the sibling groups (or a skipped step when there were none): the SFT and PRM phases, timed
        as ``time/sft`` and ``time/prm``."""
        trees = step.extras["trees"]
        if self.sft_cfg["enabled"]:
            with step.timer("sft"):
                self.metrics.write(self.sft_phase([s for s, root in trees if root.W == 0]))
        if self.prm is not None:
            with step.timer("prm"):
                self.metrics.write(self.prm_phase(trees))

    def _fresh_adamw(self, params, lr, weight_decay: float | None = None):
        o = self.optim_cfg
        wd = o.get("weight_decay", 0.0) if weight_decay is None else weight_decay
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd,
                                 betas=tuple(o.get("betas", (0.9, 0.999))), eps=o.get("eps", 1e-8))

    def sft_examples(self, samples: list[Sample]) -> tuple[list[str], list[str], list[bool]]:
        """One (prompt, step) pair per gold step: ("q", s1), ("q s1", s2), ...; the last step ends with EOS."""
        return self.sft_rows(samples)[:3]

    def sft_rows(self, samples: list[Sample]) -> tuple[list[str], list[str], list[bool], list[list]]:
        """:meth:`sft_examples` and each example's question images."""
        prompts, comps, eos, images = [], [], [], []
        for s in samples:
            if not s.solution:
                continue
            steps = self.task.splitter.split_text(s.solution)
            for k, step in enumerate(steps):
                last = k == len(steps) - 1
                prompts.append(self.step_prompt(s, steps[:k]))
                comps.append(step if last or self.mcts_cfg["step_format"] != "continue" else step + "\n")
                eos.append(last or self.mcts_cfg["step_format"] != "continue")
                images.append(s.images)
        return prompts, comps, eos, images

    def sft_uses_lora(self) -> bool:
        lora = self.sft_cfg["lora"]
        return bool(lora) and int(lora.get("r") or 0) > 0

    def sft_lr(self) -> float:
        lr = self.sft_cfg["lr"]
        return float(lr) if lr is not None else SFT_LR["lora" if self.sft_uses_lora() else "full"]

    def sft_phase(self, failed: list[Sample]) -> dict[str, float]:
        """Supervised steps on the gold solutions of the questions the search did not solve. Each SFT phase of
        the official loop is a new fine-tuning run from the current checkpoint: by default (``algo.sft.lora``) a
        fresh LoRA adapter (r 8, alpha 32) on the policy, trained with a fresh AdamW (weight decay 0.1) at 1e-4
        with 5 % linear warm-up and cosine decay over the phase, then merged into the weights; with the adapter
        off (``algo.sft.lora=null``) the full weights at 1e-5 by default."""
        prompts, comps, eos, images = self.sft_rows(failed)
        out = {"propa/sft_questions": float(len(failed)), "propa/sft_examples": float(len(prompts))}
        if not prompts:
            return out
        pid, pm, rid, rm, pix, grids = self.encode_pairs(prompts, comps, eos, images)
        ro = Rollouts(prompt_ids=pid, prompt_mask=pm, response_ids=rid, response_mask=rm, loss_mask=rm,
                      step_ids=torch.zeros_like(rid), group_ids=torch.zeros(len(prompts), dtype=torch.long),
                      sample_idx=torch.zeros(len(prompts), dtype=torch.long), texts=comps,
                      finish_reason=["stop"] * len(prompts), pixel_values=pix, image_grid_thw=grids)
        mbs, epochs, c = int(self.sft_cfg["micro_batch_size"]), int(self.sft_cfg["epochs"]), self.sft_cfg
        lr = self.sft_lr()
        with self._sft_weights() as params:
            opt = self._fresh_adamw(params, lr, weight_decay=float(c["weight_decay"]))
            sched = sft_schedule(opt, epochs * math.ceil(len(ro) / mbs), c["scheduler"], float(c["warmup_ratio"]))
            losses = []
            self.policy.train()

            def nll(mb: Rollouts):
                logp = self.forward_logp(self.policy, mb, temperature=1.0)[0]  # NLL at T = 1 (images included)
                mask = mb.loss_mask.float()
                yield core.aggregate_loss(-logp, mask, "token-mean", num_tokens=mask.sum().clamp(min=1))

            for _ in range(epochs):
                order = torch.randperm(len(ro), generator=self.shuffler)
                for i in range(0, len(ro), mbs):
                    loss, _, _ = inner_step(opt, params, nll(ro.select(order[i:i + mbs])),
                                            self.optim_cfg.get("max_grad_norm"))
                    losses.append(loss)
                    sched.step()
        out["propa/sft_loss"] = sum(losses) / len(losses)
        out["propa/sft_lr"] = lr
        return out

    @contextlib.contextmanager
    def _sft_weights(self):
        """The parameters the SFT phase trains: a fresh LoRA adapter on the policy (merged into its weights on exit,
        the policy's parameters staying the same tensors) or, with ``algo.sft.lora`` off or a policy that already
        carries adapters, the policy's trainable parameters."""
        base = [p for p in self.policy.parameters() if p.requires_grad]
        if not self.sft_uses_lora() or hasattr(self.policy, "peft_config"):
            yield base
            return
        from steprl.models.lora import apply_lora

        lora = self.sft_cfg["lora"]
        peft_model = apply_lora(self.policy, int(lora["r"]), float(lora.get("alpha", 16)),
                                float(lora.get("dropout", 0.0)), lora.get("target_modules", "all-linear"))
        try:
            yield [p for p in peft_model.parameters() if p.requires_grad]
        finally:
            peft_model.merge_and_unload()  # W += (alpha / r) B A, in place; the LoRA layers are removed
            for p in base:
                p.requires_grad_(True)

    def prm_text(self, sample: Sample, steps: list[str]) -> str:
        return self.step_prompt(sample, steps)

    def prm_scores(self, texts: list[str], images: list | None = None) -> torch.Tensor:
        """The PRM's score of each text (read at its last token); ``images``: one list per text (its question's)."""
        tok = self.tokenizer
        texts, pix, grids = self.vision_rows(texts, images)
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)  # padding side: left
        ids, att = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        vis = vision_forward_kwargs(self.policy, ids, pix, grids) if pix is not None else {}
        return self.prm(ids, att, None if vis else (att.long().cumsum(-1) - 1).clamp(min=0), **vis)[:, -1]

    def prm_phase(self, trees: list[tuple[Sample, Node]]) -> dict[str, float]:
        """MSE regression of the PRM on log_boost(Q) of every node of this step's trees."""
        texts, labels, images = [], [], []
        for s, root in trees:
            for steps, y in prm_examples(root, float(self.mcts_cfg["boost_a"])):
                texts.append(self.prm_text(s, steps))
                labels.append(y)
                images.append(s.images)
        if not texts:
            return {"propa/prm_examples": 0.0}
        y = torch.tensor(labels, dtype=torch.float, device=self.device)
        params = list(self.prm.parameters())
        opt = self._fresh_adamw(params, float(self.prm_cfg["lr"]))
        mbs, losses = int(self.prm_cfg["micro_batch_size"]), []
        self.prm.train()

        def mse(idx: list[int]):
            yield torch.nn.functional.mse_loss(self.prm_scores([texts[j] for j in idx], [images[j] for j in idx]), y[idx])

        for _ in range(int(self.prm_cfg["epochs"])):
            order = torch.randperm(len(texts), generator=self.shuffler).tolist()
            for i in range(0, len(texts), mbs):
                losses.append(inner_step(opt, params, mse(order[i:i + mbs]), None)[0])
        return {"propa/prm_examples": float(len(texts)), "propa/prm_loss": sum(losses) / len(losses)}

    # ------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def best_of_k(self, samples: list[Sample], k: int | None = None, max_steps: int | None = None):
        """Step-wise best-of-k (spec §3.6): at each step sample k candidates, score ``prefix + candidate`` with the
        PRM, keep the argmax; stop at a final step or after ``max_steps``. Returns the solution texts and, per
        question, a trace of ``(candidates, scores, chosen index)``."""
        k = int(k or self.inf_cfg["k"])
        max_steps = int(max_steps or self.inf_cfg["max_steps"])
        pol = EngineStepPolicy(self, samples)
        pol.expander = dataclasses.replace(pol.expander, temperature=float(self.inf_cfg["temperature"]))
        steps: list[list[str]] = [[] for _ in samples]
        traces: list[list] = [[] for _ in samples]
        live = list(range(len(samples)))
        was = self.prm.training
        self.prm.eval()
        for _ in range(max_steps):
            if not live:
                break
            cands = pol.expand([(i, steps[i]) for i in live], k)
            texts = [self.prm_text(samples[i], steps[i] + [c[0]]) for i, cs in zip(live, cands) for c in cs]
            scores = self.prm_scores(texts, [samples[i].images for i in live for _ in range(k)]).view(len(live), k)
            nxt = []
            for j, i in enumerate(live):
                best = int(torch.argmax(scores[j]))
                text, _, eos = cands[j][best]
                traces[i].append(([c[0] for c in cands[j]], scores[j].tolist(), best))
                steps[i].append(text)
                if not pol.is_terminal(text, eos):
                    nxt.append(i)
            live = nxt
        self.prm.train(was)
        return ["\n".join(s) for s in steps], traces

    def validation_step(self, batch, batch_idx):
        if self.inf_cfg["mode"] == "greedy":
            return super().validation_step(batch, batch_idx)
        texts, _ = self.best_of_k(batch)
        for s, text in zip(batch, texts):
            self._val_correct.append(1.0 if self.task.verify(s, text) >= 1.0 - 1e-6 else 0.0)
            self._val_sources.append(s.source or "all")


def sft_schedule(opt: torch.optim.Optimizer, total: int, kind: str, warmup_ratio: float):
    """The SFT phase's learning-rate schedule over its ``total`` steps, as the fine-tuning library PROPA used
    builds it (the HF Trainer's): ``ceil(warmup_ratio * total)`` steps of linear warm-up from 0, then cosine decay
    to 0 (``kind="cosine"``), or a constant rate (``"constant"``, no warm-up)."""
    from transformers import get_constant_schedule, get_cosine_schedule_with_warmup

    if kind == "constant":
        return get_constant_schedule(opt)
    return get_cosine_schedule_with_warmup(opt, math.ceil(warmup_ratio * total), total)
