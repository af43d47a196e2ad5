"""The rollout engine probe: once, before training, the engine's and the trainer's log-probs of the same
sampled tokens must agree (a wrong weight push, dtype or tokenizer mismatch would otherwise train on garbage
silently)."""
from __future__ import annotations

from steprl import core
from steprl.utils import dist as D


class EngineProbe:
    """Mixin of :class:`steprl.algos.base.RLModule`."""

    PROBE_PROMPT = "Question: What is 12 + 30?\nAnswer:"

    def probe_engine(self) -> float | None:
        """Sample from the rollout engine on a fixed prompt and compare its log-probs with the trainer's; fail
        loudly when the mean gap exceeds ``rollout.probe_tol`` (None: no probe)."""
        self._probed = True
        tol = getattr(self.engine, "probe_tol", None)
        if tol is None or not getattr(self.engine, "return_logprobs", False):
            return None
        prompt = getattr(self.engine, "probe_prompt", self.PROBE_PROMPT)
        ro = self.generate([prompt], n=2).to(self.device)
        diff = float(core.logprob_diff(self.logp_pass(self.policy, ro, temperature=self.engine.temperature),
                                       ro.engine_logp, ro.loss_mask))
        if not diff <= tol:
            raise RuntimeError(f"rollout engine probe: mean |logp_trainer - logp_engine| = {diff:.4f} on a fixed "
                               f"prompt exceeds rollout.probe_tol={tol} (weights not synced, or a dtype / tokenizer "
                               f"/ sampling-settings mismatch between {type(self.engine).__name__} and the trainer)")
        if D.rank() == 0:
            print(f"[steprl] rollout engine probe: mean |logp_trainer - logp_engine| = {diff:.2e} (tol {tol})")
        return diff
