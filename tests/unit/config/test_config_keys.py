"""Every key under ``algo`` is one its ``conf/algo/<name>.yaml`` declares (steprl.config.check_algo_keys): a
misspelt key in a recipe file or on the command line stops ``src/train.py`` at start-up, before anything is
built, with one ``ConfigError`` line naming the key and its close matches; every shipped recipe passes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf, open_dict

from steprl.config import ConfigError, algo_schema, check_algo_keys, check_config, check_node_keys
from tests.helpers import CONF, ROOT, compose_train

ALGOS = sorted(p.stem for p in (CONF / "algo").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_composes_to_its_schema(algo):
    cfg = compose_train([f"algo={algo}"])
    check_algo_keys(cfg)
    assert set(cfg.algo) == set(algo_schema(algo))  # the composed node is the file's node: nothing added or lost


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_recipe_passes(experiment):
    check_algo_keys(compose_train([f"experiment={experiment}"]))


def test_schema_merges_the_files_defaults_list():
    prime = algo_schema("prime")
    assert prime._target_ == "steprl.algos.prime.PRIME"
    assert prime.filters.acc_band == [0.2, 0.8]            # prime.yaml over grpo.yaml
    assert prime.filters.zero_variance is False            # inherited from grpo.yaml
    assert algo_schema("ppr").critic.grad_clip == 1.0      # ppr -> ppo -> grpo
    with pytest.raises(ConfigError, match=r"algo=grpoo: no such algorithm; valid: \[.*'grpo'"):
        algo_schema("grpoo")


def test_unknown_key_names_its_neighbours():
    schema = OmegaConf.create({"loss": {"agg": "token-mean", "clip_eps_low": 0.2}, "kl": {"coef": 0.0}})
    given = OmegaConf.create({"loss": {"agg": "token-mean", "aggg": "x", "zzz": 1}, "kl": {"coef": 0.1}})
    assert check_node_keys(given, schema, "algo") == [
        "algo.loss.aggg is not a key of algo.loss: did you mean agg? valid: ['agg', 'clip_eps_low']",
        "algo.loss.zzz is not a key of algo.loss: valid: ['agg', 'clip_eps_low']",
    ]


def test_values_of_the_wrong_type_are_rejected_null_is_not():
    schema = OmegaConf.create({"coef": 0.0, "in_reward": False, "estimator": "k3", "band": None, "betas": [0.9, 0.99]})
    ok = OmegaConf.create({"coef": 1, "in_reward": None, "estimator": "k1", "band": [0.2, 0.8], "betas": [0.9, 0.9]})
    assert check_node_keys(ok, schema, "algo.kl") == []
    bad = OmegaConf.create({"coef": "big", "in_reward": 1, "betas": 0.9})
    assert check_node_keys(bad, schema, "algo.kl") == [
        "algo.kl.coef='big' must be a number (default 0.0)",
        "algo.kl.in_reward=1 must be a boolean (default False)",
        "algo.kl.betas=0.9 must be a list (default [0.9, 0.99])",
    ]


def test_check_config_rejects_a_key_added_after_composition():
    cfg = compose_train(["experiment=prime_tiny"])
    with open_dict(cfg):
        cfg.reward.token.betta = 0.1
    with pytest.raises(ConfigError, match=r"reward\.token\.betta is not a key of reward\.token: did you mean beta or "
                                          r"betas\?"):
        check_config(cfg)


# ----------------------------------------------------------------------- through the real command line
def _train(tmp_path, recipe: str | None, *overrides: str) -> subprocess.CompletedProcess:
    """``src/train.py`` with a recipe file ``experiment=bad`` in a config directory of its own (hydra.searchpath)."""
    args = [sys.executable, str(ROOT / "src" / "train.py"), "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    if recipe is not None:
        (tmp_path / "conf" / "experiment").mkdir(parents=True)
        (tmp_path / "conf" / "experiment" / "bad.yaml").write_text("# @package _global_\n" + textwrap.dedent(recipe))
        args += [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=bad"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*args, *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


CASES = {  # node kind: (recipe, the message's key and close match)
    "algo's own node": ("defaults:\n  - override /algo: ppo\nalgo:\n  vf_coeff: 0.1\n",
                        "algo.vf_coeff is not a key of algo: did you mean vf_coef?"),
    "loss": ("algo:\n  loss:\n    clip_eps_hi: 0.28\n",
             "algo.loss.clip_eps_hi is not a key of algo.loss: did you mean clip_eps_high or clip_eps_low?"),
    "kl": ("algo:\n  kl:\n    estimater: k1\n", "algo.kl.estimater is not a key of algo.kl: did you mean estimator?"),
    "filters": ("algo:\n  filters:\n    zero_varience: true\n",
                "algo.filters.zero_varience is not a key of algo.filters: did you mean zero_variance?"),
    "nested (oreal)": ("defaults:\n  - override /algo: oreal\nalgo:\n  oreal:\n    etta: 0.1\n",
                       "algo.oreal.etta is not a key of algo.oreal: did you mean eta?"),
    "reward (flat pool key of before)": ("reward:\n  timeout_s: 5\n", "reward.timeout_s is now reward.pool.timeout_s"),
    "reward.pool": ("reward:\n  pool:\n    timout_s: 5\n",
                    "reward.pool.timout_s is not a key of reward.pool: did you mean timeout_s?"),
    "nested (mcts)": ("defaults:\n  - override /algo: propa\nalgo:\n  mcts:\n    iteration: 3\n",
                      "algo.mcts.iteration is not a key of algo.mcts: did you mean iterations?"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_a_recipe_with_a_misspelt_key_fails_at_start_up(kind, tmp_path):
    recipe, message = CASES[kind]
    r = _train(tmp_path, recipe)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"[steprl] error: {message}" in out, out
    assert "[steprl] batch:" not in out  # stopped in the pre-flight checks, before anything was built


@pytest.mark.parametrize("override, message", [
    # Hydra refuses to set a key the composed config lacks (steprl.cli's hint names the neighbours) ...
    ("algo.loss.aggg=seq-mean-token-mean", "algo.loss.aggg is not a key of this config; keys near it: algo.loss.agg"),
    # ... and a key added with + is checked against the algorithm's schema
    ("+algo.loss.aggg=seq-mean-token-mean", "algo.loss.aggg is not a key of algo.loss: did you mean agg?"),
    # a key that moved names its new place (the reward node holds its components; PRIME's PRM is reward.token) ...
    ("reward.timeout_s=1", "reward.timeout_s is now reward.pool.timeout_s"),
    ("algo=prime algo.prm.beta=0.1", "algo.prm.beta is now reward.token.beta"),
    # ... but not where the algorithm has a node of the old name (PROPA's own PRM)
    ("algo=propa algo.prm.lrr=1", "algo.prm.lrr is not a key of this config; keys near it: algo.prm.lr"),
])
def test_a_misspelt_key_on_the_command_line_fails_at_start_up(override, message, tmp_path):
    r = _train(tmp_path, None, *override.split())
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"[steprl] error: {message}" in out, out
    assert "[steprl] batch:" not in out


def test_a_config_without_its_hydra_node_is_checked_against_its_class():
    """A config built by hand, or checked after another was composed (Hydra's job state is global), is checked
    against the algo files whose ``_target_`` it names, not against the last composed ``algo=`` choice."""
    oreal = compose_train(["experiment=oreal_tiny"])
    with open_dict(oreal):
        del oreal["hydra"]
    compose_train(["algo=grpo"])  # the running job's choice is now grpo, whose schema lacks algo.oreal
    check_algo_keys(oreal)
    with open_dict(oreal):
        oreal.algo.oreal.etta = 0.1
    with pytest.raises(ConfigError, match=r"algo\.oreal\.etta is not a key of algo\.oreal: .*\[algo=oreal\]"):
        check_algo_keys(oreal)
