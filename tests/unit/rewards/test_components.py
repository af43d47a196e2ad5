"""The ``reward=`` group composes the step's reward components (steprl.rewards.components): the worker pool
under ``reward.pool``, an outcome verifier by ``_target_`` (null: the task's), the step scorer (the ``judge=``
group) and a token scorer (PRIME's implicit PRM, ``reward/token=implicit_prm``); the flat keys of before and
misspelt keys stop at start-up naming the key."""
from __future__ import annotations

import hydra
import pytest
from omegaconf import OmegaConf, open_dict

from steprl.algos.implicit_prm import ImplicitPRM
from steprl.config import ConfigError, check_config
from steprl.eval import grade
from steprl.rewards import RewardPipeline
from steprl.rewards.components import build_reward
from steprl.rollout.types import Sample
from tests.helpers import CONF, compose_train

ANSWER_WITHIN = "tests.unit.rewards.verifiers.answer_within"
Q = Sample(prompt="3+4-2=\n", answer="5")


@pytest.mark.parametrize("choice, workers", [("inline", 0), ("pool", 2)])
def test_reward_choice_gives_its_pool(choice, workers):
    cfg = compose_train([f"reward={choice}"])
    pool = {"num_workers": workers, "timeout_s": 10.0, "mp_context": "spawn"}
    assert OmegaConf.to_container(cfg.reward.pool) == pool
    parts = build_reward(cfg.reward)
    assert parts.pool == pool
    assert parts.outcome is None and parts.step is None and parts.token is None
    task = hydra.utils.instantiate(cfg.task)
    assert parts.outcome_fn(task) == task.verify  # null outcome: the task's own verifier


def test_old_flat_pool_key_names_its_new_place():
    with pytest.raises(ConfigError, match=r"^reward\.timeout_s is now reward\.pool\.timeout_s"):
        build_reward({"timeout_s": 1})
    cfg = compose_train(["+reward.timeout_s=1"])  # a recipe file merges it the same way
    with pytest.raises(ConfigError, match=r"^reward\.timeout_s is now reward\.pool\.timeout_s"):
        check_config(cfg)


def test_misspelt_reward_keys_are_named():
    cfg = compose_train(["reward=pool"])
    with open_dict(cfg):
        cfg.reward.pool.timout_s = 5
    with pytest.raises(ConfigError, match=r"reward\.pool\.timout_s is not a key of reward\.pool: did you mean "
                                          r"timeout_s\?"):
        check_config(cfg)
    with pytest.raises(ConfigError, match=r"reward\.scorer is not a key of reward: .*valid: "
                                          r"\['outcome', 'pool', 'step', 'token'\]"):
        build_reward({"scorer": None})
    with pytest.raises(ConfigError, match=r"reward\.token\.betta is not a key of reward\.token: did you mean beta "
                                          r"or betas\?"):
        build_reward({"token": {"_target_": "steprl.algos.implicit_prm.ImplicitPRM", "betta": 0.1}})
    with pytest.raises(ConfigError, match=r"reward\.token has unknown keys \['betta'\]"):  # built without a config
        ImplicitPRM(betta=0.1)
    with pytest.raises(ConfigError, match=r"reward\.outcome needs a _target_"):
        build_reward({"outcome": {"partial": 0.1}})


def test_prime_token_scorer_comes_from_reward_token():
    """algo=prime picks reward/token=implicit_prm; instantiated by its _target_, its lr is lr_ratio (2, the paper's
    1e-6 : 5e-7) x the policy's lr of the tiny rule, both read from the composed config."""
    cfg = compose_train(["experiment=prime_tiny", "reward=pool"])  # reward=pool keeps the algorithm's token scorer
    assert cfg.reward.pool.num_workers == 2
    scorer = hydra.utils.instantiate(cfg.reward.token)
    assert type(scorer) is ImplicitPRM
    ratio = OmegaConf.load(CONF / "reward" / "token" / "implicit_prm.yaml").lr_ratio
    assert ratio == 2.0 and cfg.reward.token.lr is None
    assert scorer.lr(cfg.optim.lr) == ratio * cfg.optim.lr
    assert type(build_reward(cfg.reward).token) is ImplicitPRM
    grpo = compose_train(["experiment=grpo_tiny"])
    assert grpo.reward.token is None and grpo.optim.lr == cfg.optim.lr  # the tiny rule: one policy lr


def test_outcome_verifier_by_target_replaces_the_tasks():
    """reward.outcome={_target_: fn, **kw}: fn(sample, response, **kw) grades training rollouts and eval alike."""
    cfg = compose_train([f"reward.outcome={{_target_:{ANSWER_WITHIN},partial:0.25}}"])
    check_config(cfg)
    task = hydra.utils.instantiate(cfg.task)
    parts = build_reward(cfg.reward)
    assert parts.outcome_fn(task) is parts.outcome
    with RewardPipeline(parts.outcome_fn(task), **parts.pool) as pipe:
        res = pipe([Q] * 3, ["5", "so 5", "4"])
    assert res.outcome.tolist() == [1.0, 0.25, 0.0]
    results, counts = grade(task, [Q], [["5", "so 5", "4"]], reward=cfg.reward)  # steprl.eval, reward=pool there
    assert counts == {"errors": 0, "timeouts": 0}
    assert results[0].scores == [1.0, 0.25, 0.0] and results[0].correct == [True, False, False]


def test_a_token_scorer_goes_where_it_is_used(tmp_path):
    """A token scorer with an algorithm that has none stops at start-up (it would be built and never applied);
    PRIME without its implicit PRM stops too."""
    from steprl.train import build

    cfg = compose_train(["algo=grpo", "reward/token=implicit_prm", "logger=none", "task.num_val=8"], tmp_path)
    with pytest.raises(ConfigError, match=r"reward\.token \(ImplicitPRM\) is a token scorer, which GRPO does not use"):
        build(cfg)
    cfg = compose_train(["algo=prime", "~reward/token", "logger=none", "task.num_val=8"], tmp_path)
    assert cfg.reward.token is None
    with pytest.raises(ConfigError, match=r"algo=prime needs the implicit PRM as its token scorer "
                                          r"\(reward/token=implicit_prm\), got reward\.token=None"):
        build(cfg)
