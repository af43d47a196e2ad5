"""GRPO: Group Relative Policy Optimization (Shao et al., 2024, DeepSeekMath, §4.1).

    π_θ, π_ref <- the same starting checkpoint
    each step: for each prompt q, G responses o_1..o_G ~ π_old(·|q)            (batch.samples_per_prompt)
               r_i = the task's verifier on o_i                                 (outcome supervision, §4.1.2)
               A_i = (r_i - mean_g r) / (std_g r + ε)  on every token t of o_i  (advantage=grpo)
               ρ_t = π_θ(o_t | q, o_<t) / π_old(o_t | q, o_<t)
               ℓ_t = -min(ρ_t A_i, clip(ρ_t, 1 - ε_low, 1 + ε_high) A_i)       (Eq. 3, the PPO clip)
                     + β KL_t,  KL_t = π_ref/π_θ - log(π_ref/π_θ) - 1           (Eq. 4, k3; β = algo.kl.coef)
               L = Σ_t ℓ_t m_t / Σ_t m_t over the optimiser's minibatch         (algo.loss.agg=token-mean)
               batch.ppo_epochs passes of minibatch updates; then π_old <- π_θ

Every stage of :class:`~steprl.algos.base.RLModule` already is GRPO's: the engine's defaults are this box
(verifier score, no group values, group filters off, no dense reward, the ``advantage=`` estimator, PPO clip),
so this class adds no behaviour; it names the algorithm and is what ``algo=grpo`` builds. Dr.GRPO, RLOO and
REINFORCE++ are this class with another ``advantage=`` estimator and ``loss``/``kl`` settings (their
``conf/algo`` files say which). Paper-vs-code differences (token-mean rather than the paper's per-sequence mean,
β = 0 rather than 0.04): docs/algorithms/grpo.md.
"""
from __future__ import annotations

from steprl.algos.base import RLModule


class GRPO(RLModule):
    """GRPO: the engine's default at every stage (see the module docstring for the box)."""
