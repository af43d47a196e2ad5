"""Pure tensor functions shared by every algorithm: masks, advantages, losses, KL, step scatter/gather.

No models, no config objects, no I/O; each function documents its formula and is unit-tested against
hand-computed numbers in ``tests/unit/core``.
"""
from .advantages import (
    STD_SCALES,
    discounted_returns,
    drgrpo_advantage,
    gae,
    group_mean_std,
    grpo_advantage,
    last_token_index,
    outcome_to_token_rewards,
    reinforce_pp_advantage,
    reinforce_pp_baseline_advantage,
    rloo_advantage,
)
from .empg import EMPG_FINAL_NORMS, EMPGOut, empg_advantages, empg_step_advantages, expected_logit_grad_sq_norm
from .filters import group_filter
from .offpolicy import logprob_diff, tis_weight
from .losses import (
    AGG_MODES,
    KL_KINDS,
    aggregate_loss,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    ppo_clip_loss,
    value_clip_loss,
)
from .salt import (
    INVALID_ACTION,
    SALT_RENORMS,
    SALT_STATE_KEYS,
    canon_text,
    parse_action,
    salt_edge_keys,
    salt_step_advantages,
)
from .masks import masked_mean, masked_mean_var, masked_sum, masked_var, masked_whiten
from .steps import (
    STEP_REDUCTIONS,
    char_spans_to_step_ids,
    fill_step_ids,
    gather_step_values,
    place_on_step_ends,
    scatter_step_values,
    step_last_token_mask,
)

__all__ = [
    "group_filter",
    "logprob_diff",
    "tis_weight",
    "AGG_MODES",
    "KL_KINDS",
    "STD_SCALES",
    "STEP_REDUCTIONS",
    "aggregate_loss",
    "char_spans_to_step_ids",
    "discounted_returns",
    "drgrpo_advantage",
    "EMPG_FINAL_NORMS",
    "EMPGOut",
    "empg_advantages",
    "empg_step_advantages",
    "expected_logit_grad_sq_norm",
    "entropy_from_logits",
    "fill_step_ids",
    "gae",
    "gather_step_values",
    "group_mean_std",
    "grpo_advantage",
    "kl_penalty",
    "last_token_index",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_mean_var",
    "masked_whiten",
    "outcome_to_token_rewards",
    "place_on_step_ends",
    "ppo_clip_loss",
    "reinforce_pp_advantage",
    "reinforce_pp_baseline_advantage",
    "rloo_advantage",
    "INVALID_ACTION",
    "SALT_RENORMS",
    "SALT_STATE_KEYS",
    "canon_text",
    "parse_action",
    "salt_edge_keys",
    "salt_step_advantages",
    "scatter_step_values",
    "step_last_token_mask",
    "value_clip_loss",
]

# PRIME (Cui et al., 2025) and OREAL (Lyu et al., 2025)
from .oreal import (  # noqa: E402
    OREAL_SHAPINGS,
    oreal_importance_weights,
    oreal_pair_select,
    oreal_policy_loss,
    oreal_rewards,
    oreal_rm_loss,
    oreal_shaped_advantage,
)
from .prime import (  # noqa: E402
    PRIME_FORMS,
    PRIME_GRANULARITIES,
    implicit_process_rewards,
    prime_batch_norm,
    prime_grpo_returns,
    prime_reinforce_returns,
    prime_rloo_process,
    prime_rloo_returns,
    prm_abs_acc,
    prm_ce_loss,
    prm_dpo_loss,
    prm_pairwise_acc,
)

__all__ += [
    "OREAL_SHAPINGS", "oreal_importance_weights", "oreal_pair_select", "oreal_policy_loss", "oreal_rewards",
    "oreal_rm_loss", "oreal_shaped_advantage",
    "PRIME_FORMS", "PRIME_GRANULARITIES", "implicit_process_rewards", "prime_batch_norm", "prime_grpo_returns",
    "prime_reinforce_returns", "prime_rloo_process", "prime_rloo_returns", "prm_abs_acc", "prm_ce_loss",
    "prm_dpo_loss", "prm_pairwise_acc",
]
