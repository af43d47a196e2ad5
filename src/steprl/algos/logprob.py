"""Log-prob passes of the RL engine: the response tokens' log-probs (and entropies) under a model, trimmed to
each micro-batch's longest prompt and response, with the shared-prompt and vision paths."""
from __future__ import annotations

import torch

from steprl import core
from steprl.models import packing
from steprl.models.build import cache_kwarg
from steprl.models.shared_prefix import shared_prompt_logits
from steprl.models.shared_prefix import supported as shared_prompt_ok
from steprl.models.vision import vision_forward_kwargs
from steprl.rollout.types import Rollouts


class LogProbPasses:
    """Mixin of :class:`steprl.algos.base.RLModule`: ``forward_logp`` (one micro-batch, with gradient),
    ``logp_pass`` (a whole batch in micro-batches, no gradient), ``logprob_temperature``, the reference
    policy's log-probs (``reference_logp``) and the step's passes before its update (``step_logprobs``)."""

    def step_logprobs(self, ro: Rollouts, n_updates: int) -> None:
        """The step's log-probs before the update: the old policy's where the ratio needs them (several
        updates, unless an off-policy algorithm keeps the behaviour policy's), the reference's, the old
        policy's for a KL in the reward, and the engine / trainer mismatch ``rollout/logprob_diff``."""
        if n_updates > 1 and not (self.behaviour_logp_from_rollout and ro.old_logp is not None):
            ro.old_logp = self.logp_pass(self.policy, ro)
        if self.has_reference:
            ro.ref_logp = self.reference_logp(ro)
        if ro.old_logp is None and self.kl_cfg["in_reward"] and self.has_reference:
            ro.old_logp = self.logp_pass(self.policy, ro)
        if ro.engine_logp is not None and self.logprob_temperature() == self.engine.temperature:
            # engine / trainer mismatch: logged every step, corrected by TIS (same temperature only)
            if ro.old_logp is None:
                ro.old_logp = self.logp_pass(self.policy, ro)
            self.metrics.mean("rollout/logprob_diff", float(core.logprob_diff(ro.old_logp, ro.engine_logp,
                                                                              ro.loss_mask)))

    def forward_logp(self, model, mb: Rollouts, entropy: bool = False, temperature: float | None = None):
        """Log-probs (and entropies) of the response tokens under ``model``, on the rows of ``mb`` trimmed to
        their longest prompt and response; logits are divided by ``temperature`` (default:
        :meth:`logprob_temperature`). ``entropy="detached"``: entropies without gradient (a metric only)."""
        p_keep = mb.prompt_mask.bool().any(0)
        p0 = int(torch.nonzero(p_keep)[0]) if bool(p_keep.any()) else mb.prompt_mask.shape[1] - 1
        t_len = max(1, int(mb.response_mask.sum(-1).max()))
        ids = torch.cat([mb.prompt_ids[:, p0:], mb.response_ids[:, :t_len]], 1)
        att = torch.cat([mb.prompt_mask[:, p0:], mb.response_mask[:, :t_len].to(mb.prompt_mask.dtype)], 1)
        if getattr(self, "batch_cfg", {}).get("packed") and packing.usable(model, att, ids.shape[1] - t_len,
                                                                            mb.pixel_values):
            # padding-free: the rows end to end in one row, attention per sequence (steprl.models.packing)
            return packing.packed_logp(model, ids, att, ids.shape[1] - t_len, mb.response_ids[:, :t_len],
                                       mb.response_ids.shape[1], self.logprob_temperature() if temperature is None
                                       else temperature, entropy, self.batch_cfg.get("share_prompt", True))
        pos = (att.long().cumsum(-1) - 1).clamp(min=0)
        vis = vision_forward_kwargs(model, ids, mb.pixel_values, mb.image_grid_thw,
                                    response_from=ids.shape[1] - t_len)
        if vis:  # a VL model computes its multimodal positions from the ids, the mask and the image grids
            pos = None
        # Without left padding (and with each response one run of tokens) the mask is needless: responses are
        # right-padded, and under causal attention a real token never sees a later (padding) position. No mask
        # lets SDPA take its causal fast path instead of building and applying a [n, 1, L, L] mask.
        resp = mb.response_mask[:, :t_len]
        no_pad = not vis and bool(att[:, 0].all()) and bool((resp[:, 1:] <= resp[:, :-1]).all())
        logits = None
        if not vis and getattr(self, "batch_cfg", {}).get("share_prompt", True) and shared_prompt_ok(model):
            # the G responses of a prompt share its forward (steprl.models.shared_prefix); None: no shared prompt
            logits = shared_prompt_logits(model, ids, att, pos, ids.shape[1] - t_len, cache_kwarg(model))
        if logits is None:
            logits = model(input_ids=vis.pop("input_ids", ids), attention_mask=None if no_pad else att,
                           position_ids=pos, use_cache=False, logits_to_keep=t_len + 1, **vis).logits[:, :-1]
        logits = logits.float()
        logits = logits / (self.logprob_temperature() if temperature is None else temperature)
        logp = core.logprobs_from_logits(logits, mb.response_ids[:, :t_len])
        if entropy == "detached":  # a metric only: no autograd graph through the softmax
            with torch.no_grad():
                ent = core.entropy_from_logits(logits.detach())
        else:
            ent = core.entropy_from_logits(logits) if entropy else None
        T = mb.response_ids.shape[1]
        pad = lambda x: torch.nn.functional.pad(x, (0, T - t_len)) if x is not None else None  # noqa: E731
        return pad(logp), pad(ent)

    def logprob_temperature(self) -> float:
        """``algo.loss.logprob_temperature``, or the rollout engine's sampling temperature when it is None."""
        t = getattr(self, "loss_cfg", {}).get("logprob_temperature")
        return self.engine.temperature if t is None else float(t)

    @torch.no_grad()
    def logp_pass(self, model, ro: Rollouts, temperature: float | None = None) -> torch.Tensor:
        mbs = self.batch_cfg["micro_batch_size"]
        was = model.training
        model.eval()
        rows, tokens = torch.arange(len(ro)), row_tokens(ro)
        out = []
        for mid in packing.micro_batches(rows, tokens, mbs, self.batch_cfg.get("micro_batch_tokens")):
            if len(mid) == 0:  # the ranks agreed on more micro-batches: a discarded forward joins FSDP2's gathers
                self.forward_logp(model, ro.select(packing.zero_weight_row(rows, tokens)), temperature=temperature)
                continue
            out.append(self.forward_logp(model, ro.select(mid), temperature=temperature)[0])
        out = torch.cat(out)
        model.train(was)
        return out

    @property
    def adapter_reference(self) -> bool:
        """LoRA policy: the reference is the base model, i.e. the policy with its adapters disabled (no copy)."""
        return hasattr(self.policy, "disable_adapter") and self.kl_cfg["coef"] > 0

    @property
    def has_reference(self) -> bool:
        return self.ref_policy is not None or self.adapter_reference

    def reference_logp(self, ro: Rollouts) -> torch.Tensor:
        """Log-probs of the rollouts under the reference policy."""
        if self.ref_policy is not None:
            return self.logp_pass(self.ref_policy, ro)
        with self.policy.disable_adapter():
            return self.logp_pass(self.policy, ro)


def row_tokens(ro: Rollouts) -> torch.Tensor:
    """Each row's real tokens (prompt + response): what a token-budgeted micro-batch counts."""
    return (ro.prompt_mask.sum(-1) + ro.response_mask.sum(-1)).cpu()
