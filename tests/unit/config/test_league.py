"""experiment=league_tiny: the sweep lists algorithms that exist (each with its *_tiny recipe) and 3 seeds, and
every job of the multirun composes, resolves and passes check_config (nothing is trained here)."""
from __future__ import annotations

import itertools


from omegaconf import OmegaConf

from steprl.config import check_config, register_resolvers
from tests.helpers import CONF, compose_train

register_resolvers()


def _sweep() -> dict[str, list[str]]:
    cfg = compose_train(["experiment=league_tiny"])
    return {k: [v.strip() for v in str(val).split(",")] for k, val in cfg.hydra.sweeper.params.items()}


def test_the_sweep_lists_existing_algorithms_and_three_seeds():
    params = _sweep()
    assert set(params) == {"algo", "seed"}
    assert params["seed"] == ["0", "1", "2"]
    algos = params["algo"]
    assert len(algos) == len(set(algos)) and "grpo" in algos and "sft" not in algos
    for a in algos:
        assert (CONF / "algo" / f"{a}.yaml").exists(), f"league lists algo={a} but conf/algo/{a}.yaml is missing"
        assert (CONF / "experiment" / f"{a}_tiny.yaml").exists(), f"algo={a} has no experiment={a}_tiny"


def test_every_job_of_the_sweep_composes(tmp_path):
    params = _sweep()
    jobs = list(itertools.product(params["algo"], params["seed"]))
    assert len(jobs) == 3 * len(params["algo"])
    # the seed changes no composition: each algorithm is composed once, with a different seed each time
    for i, algo in enumerate(params["algo"]):
        seed = params["seed"][i % 3]
        cfg = compose_train(["experiment=league_tiny", f"algo={algo}", f"seed={seed}"], out_dir=tmp_path)
        assert cfg.hydra.runtime.choices.algo == algo and cfg.seed == int(seed)
        assert cfg.model.path == "steprl:tiny_arith" and cfg.task._target_.endswith("ArithTask")
        assert "league_tiny" in OmegaConf.to_container(cfg.hydra.sweep)["dir"]
        check_config(cfg)
        module = cfg.algo._target_.rsplit(".", 1)[0]  # the algorithm's module exists (importing it is slow)
        path = CONF.parent / "src" / module.replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), cfg.algo._target_  # module or package


def test_a_short_smoke_runs_overrides_compose(tmp_path):
    cfg = compose_train(["experiment=league_tiny", "algo=grpo", "trainer.max_steps=30", "trainer.val_check_interval=30",
                         "task.num_val=128", "torch_threads=1"], out_dir=tmp_path)
    check_config(cfg)
    assert cfg.trainer.max_steps == 30 and cfg.task.num_val == 128
