"""The Hydra tree under conf/: every option of every group composes, resolves and passes check_config; wrong
options, unknown keys and inconsistent batch numbers are rejected with messages that name what is wrong.

Nothing here loads a model: hub model configs are only composed and read.
"""
from __future__ import annotations

import importlib.util
import json
import re

import hydra
import pytest
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict

from steprl.config import ConfigError, check_config, register_resolvers
from tests.helpers import CONF, SHARED, compose_train

register_resolvers()  # ${abspath:...} in logger=mlflow (steprl.train registers it on import)

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
# rows in the formats the two file-backed tasks read (used when ../shared/data lacks the real files)
DATA_ROWS = {
    "math": ("math500_test.jsonl", [{"problem": "What is 1+1?", "solution": "$1+1=\\boxed{2}$", "answer": "2"},
                                    {"problem": "What is 2*3?", "solution": "$\\boxed{6}$", "answer": "6"},
                                    {"problem": "What is 9-4?", "solution": "$\\boxed{5}$", "answer": "5"}]),
    "gsm8k": ("gsm8k_test.jsonl", [{"question": "Tom has 3 apples and buys 2. How many?", "answer": "3+2=5\n#### 5"},
                                   {"question": "Ann has 4 pens and loses 1. How many?", "answer": "4-1=3\n#### 3"},
                                   {"question": "2 boxes of 5 eggs. How many eggs?", "answer": "2*5=10\n#### 10"}]),
}
# the benchmark presets and code tasks read the same kinds of rows (a few per format)
_MATH_ROWS = DATA_ROWS["math"][1]
DATA_ROWS.update({
    "math500": ("math500_test.jsonl", _MATH_ROWS),
    "aime24": ("aime24_test.jsonl", [{"id": i, "problem": r["problem"], "answer": r["answer"]} for i, r in enumerate(_MATH_ROWS)]),
    "aime25": ("aime25_test.jsonl", [{"problem": r["problem"], "answer": r["answer"]} for r in _MATH_ROWS]),
    "amc23": ("amc23_test.jsonl", [{"id": i, "problem": r["problem"], "answer": float(r["answer"])} for i, r in enumerate(_MATH_ROWS)]),
    "minerva_math": ("minerva_math_test.jsonl", [{"problem": r["problem"], "solution": r["solution"]} for r in _MATH_ROWS]),
    "olympiadbench": ("olympiadbench_test.jsonl", [{"question": r["problem"], "final_answer": [f"${r['answer']}$"]} for r in _MATH_ROWS]),
    "humaneval": ("humaneval_rows.jsonl", [{"task_id": f"h/{i}", "prompt": f"def f{i}(x):\n", "entry_point": f"f{i}",
                                            "canonical_solution": "    return x\n",
                                            "test": f"def check(c):\n    assert c({i}) == {i}\n"} for i in range(3)]),
})


pytestmark = pytest.mark.usefixtures("one_thread")


def _data_path(task: str, tmp_path) -> str:
    name, rows = DATA_ROWS[task]
    shared = SHARED / "data" / name
    if shared.is_file():
        return str(shared)
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _compose(overrides: list[str], tmp_path) -> DictConfig:
    if not any(o.startswith("logger=") for o in overrides):
        overrides = [*overrides, "logger=none"]
    return compose_train(overrides, tmp_path)


def _resolved(cfg: DictConfig) -> dict:
    """The whole config without Hydra's own node, every interpolation resolved."""
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# ------------------------------------------------------------------------------------------ every option
def _option_params():
    for group, opt in OPTIONS:
        marks = []
        yield pytest.param(group, opt, marks=marks, id=f"{group}={opt}")


@pytest.mark.parametrize("group,opt", list(_option_params()))
def test_every_option_composes_resolves_and_checks(group, opt, tmp_path):
    overrides = [f"{group}={opt}"]
    if group == "task" and opt in DATA_ROWS:
        overrides.append(f"task.path={_data_path(opt, tmp_path)}")
    if group == "advantage" and opt.startswith("gae"):
        overrides.append("algo=ppo")  # GAE reads a critic's values: only PPO has one
    cfg = _compose(overrides, tmp_path)
    assert cfg.hydra.runtime.choices[group] == opt
    plain = _resolved(cfg)
    assert plain["paths"]["output_dir"] == str(tmp_path)
    derived = check_config(cfg)
    assert all(isinstance(v, int) and v >= 1 for v in derived.values())
    # the importable / instantiable parts of the option are real
    if group == "algo":
        assert hydra.utils.get_class(cfg.algo._target_)
    if group == "advantage":
        assert type(hydra.utils.instantiate(cfg.advantage)).__name__ == cfg.advantage._target_.rsplit(".", 1)[1]
        assert plain["algo"]["advantage"] == plain["advantage"]  # the command-line choice reaches the algorithm
    if group == "task":
        task = hydra.utils.instantiate(cfg.task)
        assert len(task.train_dataset()) > 0 and task.train_dataset()[0].prompt
    if group == "rollout" and opt == "vllm" and importlib.util.find_spec("vllm") is None:
        with pytest.raises(InstantiationException, match=r"steprl\[vllm\]"):  # optional extra, named
            hydra.utils.instantiate(cfg.rollout)
    elif group == "rollout":
        eng = hydra.utils.instantiate(cfg.rollout)
        assert eng.max_new_tokens == cfg.rollout.max_new_tokens
    if group == "callbacks":
        for name, node in cfg.callbacks.items():
            assert hydra.utils.instantiate(node) is not None, name
    if group == "logger" and opt == "mlflow":
        assert plain["logger"]["tracking_uri"] == f"sqlite:///{tmp_path}/mlflow.db"
        assert plain["logger"]["run_name"] == "grpo-arith-seed0"
    if group == "experiment" and opt != "league_tiny":  # the league is a sweep over algorithms
        # <algo>_tiny and the paper recipes <algo>_<setting> run that algorithm
        assert opt.startswith(cfg.hydra.runtime.choices["algo"] + "_")


@pytest.mark.parametrize("opt", [o for g, o in OPTIONS if g == "model" and o.startswith("qwen")])
def test_hub_model_configs_name_real_hub_ids(opt, tmp_path):
    cfg = _compose([f"model={opt}"], tmp_path)
    assert re.fullmatch(r"Qwen/Qwen2\.5-(Math-|VL-)?\d+(\.\d+)?B(-Instruct)?", cfg.model.path), cfg.model.path
    assert cfg.model.tiny is None
    assert _resolved(cfg)["model"]["init_seed"] == 0
    check_config(cfg)


# the advantage each algorithm picks through its own defaults list (algo=X alone is a faithful X)
ALGO_ADVANTAGE = {
    "grpo": ("GroupAdvantage", {"kind": "grpo"}),
    "drgrpo": ("GroupAdvantage", {"kind": "drgrpo"}),
    "rloo": ("GroupAdvantage", {"kind": "rloo", "use_token_rewards": True}),
    "ppo": ("GAE", {"lam": 0.95}),
    "reinforce_pp": ("ReinforcePP", {"baseline": False}),
}


@pytest.mark.parametrize("algo", sorted(ALGO_ADVANTAGE))
def test_algo_picks_its_advantage_and_the_command_line_can_change_it(algo, tmp_path):
    cls, fields = ALGO_ADVANTAGE[algo]
    adv = _compose([f"algo={algo}"], tmp_path).advantage
    assert adv._target_.endswith("." + cls)
    assert {k: adv[k] for k in fields} == fields
    other = "reinforce_pp_baseline"
    cfg = _compose([f"algo={algo}", f"advantage={other}"], tmp_path)
    assert _resolved(cfg)["algo"]["advantage"] == {"_target_": "steprl.algos.advantage.ReinforcePP",
                                                  "gamma": 1.0, "baseline": True}


def test_drgrpo_normaliser_follows_the_rollout_length(tmp_path):
    loss = _resolved(_compose(["algo=drgrpo", "rollout.max_new_tokens=37"], tmp_path))["algo"]["loss"]
    assert loss["agg"] == "seq-mean-token-sum-norm" and loss["norm_len"] == 37


def test_debug_fast_derived_numbers(tmp_path):
    cfg = _compose(["debug=fast"], tmp_path)
    # 2 prompts x 4 samples = 8 rollouts; minibatch 8 -> 1 update per epoch; micro 4 -> 2 accumulated forwards
    assert check_config(cfg) == {"rollouts_per_step": 8, "updates_per_step": 1, "grad_accumulation": 2}


# ------------------------------------------------------------------------------------------ rejections
@pytest.mark.parametrize("group", ["algo", "model", "task", "advantage", "experiment"])
def test_unknown_option_lists_the_valid_choices(group, tmp_path):
    with pytest.raises(MissingConfigException) as e:
        _compose([f"{group}=nope"], tmp_path)
    msg = str(e.value)
    assert f"{group}/nope" in msg
    for f in (CONF / group).glob("*.yaml"):
        assert f.stem in msg


@pytest.mark.parametrize("key", ["batch.nope", "rollout.temprature", "algo.loss.nope"])
def test_unknown_key_fails(key, tmp_path):
    with pytest.raises(ConfigCompositionException, match=re.escape(key)):
        _compose([f"{key}=1"], tmp_path)


BATCH = ["batch.prompts_per_step=4", "batch.samples_per_prompt=4", "batch.minibatch_size=8",
         "batch.micro_batch_size=2", "batch.ppo_epochs=1"]


def _batch(**kw) -> list[str]:
    out = [o for o in BATCH if o.split("=")[0].split(".")[1] not in kw]
    return out + [f"batch.{k}={v}" for k, v in kw.items()]


@pytest.mark.parametrize("overrides,keys", [
    # 4 x 4 = 16 rollouts cannot be cut into minibatches of 6
    (_batch(minibatch_size=6), ["batch.minibatch_size", "batch.prompts_per_step", "batch.samples_per_prompt"]),
    # 8 sequences per minibatch cannot be cut into micro-batches of 3
    (_batch(micro_batch_size=3), ["batch.micro_batch_size", "batch.minibatch_size"]),
    # one sample per prompt leaves no group to compare against
    (_batch(samples_per_prompt=1, minibatch_size=4), ["batch.samples_per_prompt"]),
    (["algo=rloo", *_batch(samples_per_prompt=1, minibatch_size=4)], ["batch.samples_per_prompt"]),
    (["algo=drgrpo", *_batch(samples_per_prompt=1, minibatch_size=4)], ["batch.samples_per_prompt"]),
    (_batch(prompts_per_step=0), ["batch.prompts_per_step"]),
    (_batch(samples_per_prompt=0), ["batch.samples_per_prompt"]),
    (_batch(minibatch_size=0), ["batch.minibatch_size"]),
    (_batch(micro_batch_size=-2), ["batch.micro_batch_size"]),
    (_batch(ppo_epochs=0), ["batch.ppo_epochs"]),
    (_batch(minibatch_size=2.5), ["batch.minibatch_size"]),
    (["algo=sft", "batch.prompts_per_step=16", "batch.micro_batch_size=5"],
     ["batch.micro_batch_size", "batch.prompts_per_step"]),
    ([*BATCH, "algo.kl.coef=-0.1"], ["algo.kl.coef"]),
    ([*BATCH, "algo.filters.acc_band=[0.8,0.2]"], ["algo.filters.acc_band"]),
    ([*BATCH, "trainer.max_steps=0"], ["trainer.max_steps"]),
])
def test_inconsistent_settings_raise_config_error_naming_the_keys(overrides, keys, tmp_path):
    cfg = _compose(overrides, tmp_path)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    for k in keys:
        assert k in str(e.value)
    assert isinstance(e.value, ValueError)


def test_one_sample_per_prompt_with_a_group_mean_baseline_is_rejected(tmp_path):
    cfg = _compose(["algo=reinforce_pp", "advantage=reinforce_pp_baseline",
                    *_batch(samples_per_prompt=1, minibatch_size=4)], tmp_path)
    with pytest.raises(ConfigError, match="batch.samples_per_prompt"):
        check_config(cfg)


def test_gae_without_a_critic_is_rejected_at_compose_time(tmp_path):
    cfg = _compose(["algo=grpo", "advantage=gae", *BATCH], tmp_path)
    with pytest.raises(ConfigError, match="advantage"):
        check_config(cfg)


def test_consistent_batch_passes_with_derived_numbers(tmp_path):
    # 4 x 4 = 16 rollouts, minibatch 8 -> 2 updates per epoch x 3 epochs = 6; 8 / 2 = 4 micro-batches
    cfg = _compose([*_batch(ppo_epochs=3)], tmp_path)
    assert check_config(cfg) == {"rollouts_per_step": 16, "updates_per_step": 6, "grad_accumulation": 4}
    # REINFORCE++ has no group baseline: one sample per prompt is allowed
    cfg = _compose(["algo=reinforce_pp", *_batch(samples_per_prompt=1, minibatch_size=4)], tmp_path)
    assert check_config(cfg)["rollouts_per_step"] == 4


def test_build_rejects_before_loading_anything(tmp_path):
    """The checks run first: a bad batch is reported even when the model path does not exist."""
    from steprl.train import build

    cfg = _compose([*_batch(micro_batch_size=3), "model.path=/nonexistent/model"], tmp_path)
    with pytest.raises(ConfigError, match="batch.micro_batch_size"):
        build(cfg)


def test_missing_task_file_names_the_path(tmp_path):
    cfg = _compose(["task=math", "task.path=/nonexistent.jsonl"], tmp_path)
    _resolved(cfg)  # composing and resolving is fine; the file is read when the task is built
    with pytest.raises(InstantiationException) as e:
        hydra.utils.instantiate(cfg.task)
    assert "FileNotFoundError" in str(e.value) and "/nonexistent.jsonl" in str(e.value)


@pytest.mark.parametrize("task", ["math", "gsm8k"])
def test_file_task_without_a_path_names_the_key(task, tmp_path):
    cfg = _compose([f"task={task}"], tmp_path)
    with pytest.raises(Exception, match="task.path"):
        _resolved(cfg)


def test_every_advantage_estimator_lives_in_one_module():
    """conf/ mirrors src/: every ``advantage=`` option instantiates a class of ``steprl.algos.advantage``."""
    import yaml

    targets = {p.stem: yaml.safe_load(p.read_text())["_target_"] for p in sorted((CONF / "advantage").glob("*.yaml"))}
    assert len(targets) >= 9 and "prime" in targets
    outside = {k: t for k, t in targets.items() if t.rpartition(".")[0] != "steprl.algos.advantage"}
    assert not outside, f"advantage= targets outside steprl.algos.advantage: {outside}"
    for t in set(targets.values()):
        assert callable(hydra.utils.get_class(t)), t
