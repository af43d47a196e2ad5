"""The step's reward components, built from the ``reward=`` config node (``conf/reward/*.yaml``).

    pool      the bounded worker pool the outcome verifier and the task's step checker run in
              (num_workers, timeout_s, mp_context; ``reward=inline``: 0 workers, ``reward=pool``: 2)
    outcome   the outcome verifier: null = the task's own (``task.verify``), or a ``_target_`` naming a function
              ``fn(sample, response, **kw) -> float`` (the other keys are its ``kw``)
    step      the step scorer: the ``judge=`` group's node (rule | hf | openai | scripted), built where it scores,
              with the task and the algorithm's own prompt (:func:`steprl.rewards.judges.build_judge`)
    token     a token scorer, built by ``_target_`` (``reward/token=implicit_prm``: PRIME's implicit PRM,
              Cui et al., 2025), handed to the algorithm's dense-rewards stage

Every component with a ``_target_`` is built with ``hydra.utils.instantiate``, like every other config group.
Config mistakes are :class:`~steprl.config.ConfigError`\\ s naming the key: a key the node does not have (with
its close matches), and the flat keys of the node before it held the components (``reward.timeout_s`` is
``reward.pool.timeout_s``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from steprl.config import ConfigError, check_reward_keys, reward_pool_defaults


def _instantiate(node: Mapping[str, Any], where: str, partial: bool = False):
    import hydra

    if not node.get("_target_"):
        raise ConfigError(f"{where} needs a _target_ (a dotted path) or null, got {dict(node)!r}")
    try:
        return hydra.utils.instantiate(dict(node), _partial_=partial, _convert_="all")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra wraps the target's own errors in its exception types
        cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from e
        raise ConfigError(f"{where}._target_={node['_target_']}: cannot build it ({type(e).__name__}: {e})") from e


@dataclass
class RewardComponents:
    """The built components (see the module doc); ``outcome`` None: the task's verifier; ``step`` the judge's
    config (or None); ``token`` the token scorer object (or None)."""

    pool: dict = field(default_factory=reward_pool_defaults)
    outcome: Callable | None = None
    step: dict | None = None
    token: Any = None

    def outcome_fn(self, task) -> Callable:
        """The outcome verifier: the configured one, else the task's ``verify``."""
        return self.outcome if self.outcome is not None else task.verify


def build_reward(cfg: Mapping[str, Any] | None) -> RewardComponents:
    """The components of a ``reward`` node (a plain mapping or a DictConfig; None: ``reward=inline``)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg or {})
    problems = check_reward_keys(cfg)
    if problems:
        raise ConfigError(problems[0])
    pool = {**reward_pool_defaults(), **(cfg.get("pool") or {})}
    outcome = cfg.get("outcome")
    step = cfg.get("step")
    token = cfg.get("token")
    return RewardComponents(
        pool=pool,
        outcome=_instantiate(outcome, "reward.outcome", partial=True) if outcome is not None else None,
        step=dict(step) if step else None,
        token=_instantiate(token, "reward.token") if token is not None else None,
    )
