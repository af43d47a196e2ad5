"""The pure pieces of a run's life: how a resumed config is merged, unique run directories, keys near a typo."""
from __future__ import annotations

from pathlib import Path

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from steprl.cli import near_keys
from steprl.config import unique_dir
from steprl.resume import flatten, merge, unflatten
from tests.helpers import CONF, compose_train


def test_flatten_round_trip():
    node = {"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}
    flat = flatten(node)
    assert flat == {"a.b": 1, "a.c": [1, 2], "d": None, "e": {}}
    assert unflatten(flat) == node


def test_merge_keeps_the_saved_config_and_applies_only_what_the_command_line_changes():
    """The saved run had experiment=grpo_tiny with a batch (4 prompts per step, minibatch 32) and a learning rate
    (1e-4) that today's files no longer give. Resumed with `trainer.max_steps=9 logger=none`: both of those
    change, the saved lr and batch stay, and the saved run's own override (the experiment) is not re-applied as a
    change."""
    saved = flatten(_plain(compose_train(["experiment=grpo_tiny"])))
    assert saved["batch.prompts_per_step"] != 4 and saved["optim.lr"] != 1e-4   # the test's premise
    saved.update({"optim.lr": 1e-4, "batch.prompts_per_step": 4, "batch.minibatch_size": 32})
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):  # merge composes as inside src/train.py
        merged, effective = merge(unflatten(saved), ["experiment=grpo_tiny"],
                                  ["ckpt_path=x.ckpt", "trainer.max_steps=9", "logger=none"])
    assert merged["optim.lr"] == 1e-4 and merged["batch.prompts_per_step"] == 4
    assert merged["trainer.max_steps"] == 9
    assert merged["logger"] == {} and not any(k.startswith("logger.") for k in merged)
    changed = {k for k in set(saved) | set(merged) if saved.get(k, "-") != merged.get(k, "-")}
    assert changed == {"trainer.max_steps", "logger"} | {k for k in saved if k.startswith("logger.")}
    assert effective == ["experiment=grpo_tiny", "trainer.max_steps=9", "logger=none"]


def _plain(cfg):
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg, resolve=False)
    out.pop("hydra", None)
    return out


def test_unique_dir_gives_a_new_directory_per_caller(tmp_path, monkeypatch):
    import steprl.config as c

    base = str(tmp_path / "runs" / "12-00-00-grpo")
    first = unique_dir(base)
    assert first == base and Path(first).is_dir()
    assert unique_dir(base) == first  # one process resolves one path to one directory
    monkeypatch.setattr(c, "_CLAIMED", {})  # another process asking for the same path
    assert unique_dir(base) == base + "-2"
    monkeypatch.setattr(c, "_CLAIMED", {})
    assert unique_dir(base) == base + "-3"


def test_near_keys_of_a_misplaced_key():
    cfg = compose_train([])
    assert near_keys(cfg, "algo.lr")[0] == "optim.lr"
    assert "trainer.max_steps" in near_keys(cfg, "trainer.max_step")


def test_merge_applies_an_override_equal_to_todays_default():
    """Saved: debug=fast with trainer.max_steps=1000 and an lr of 1e-4. `trainer.max_steps=2` (what debug=fast
    itself gives) and `optim.lr=3e-5` (today's default) must still replace the saved 1000 and 1e-4."""
    saved = flatten(_plain(compose_train(["debug=fast", "trainer.max_steps=1000"])))
    saved["optim.lr"] = 1e-4
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        merged, effective = merge(unflatten(saved), ["debug=fast", "trainer.max_steps=1000"],
                                  ["trainer.max_steps=2", "optim.lr=3e-5"])
    assert merged["trainer.max_steps"] == 2 and merged["optim.lr"] == 3e-5
    assert merged["batch.prompts_per_step"] == 2  # debug=fast's, kept
    assert effective == ["debug=fast", "trainer.max_steps=2", "optim.lr=3e-5"]
