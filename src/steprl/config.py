"""Checks on a composed config that Hydra cannot express, and the batch-vocabulary banner."""
from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from steprl import job


class ConfigError(ValueError):
    """A composed configuration that cannot run; the message names the keys."""


def register_resolvers() -> None:
    """``${abspath:p}`` and ``${unique_dir:p}``; registered before Hydra composes (``--cfg job --resolve`` too)."""
    if not OmegaConf.has_resolver("abspath"):
        OmegaConf.register_new_resolver("abspath", lambda p: str(Path(p).resolve()))
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir)


_CLAIMED: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """``path``, or ``path-2``, ``path-3``, ... : the first that this call creates itself (``mkdir`` is atomic, so
    two runs started in the same second get two directories). One process resolves one path to one directory."""
    if path in _CLAIMED:
        return _CLAIMED[path]
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        _CLAIMED[path] = str(candidate)
        return str(candidate)
    raise ConfigError(f"hydra.run.dir: no free directory name next to {path}")


def check_batch(batch: DictConfig | dict, is_rl: bool = True) -> dict[str, int]:
    """Validate the batch vocabulary and return the derived numbers."""
    b = dict(batch)
    for key in ("prompts_per_step", "micro_batch_size") + (("samples_per_prompt", "minibatch_size", "ppo_epochs")
                                                         if is_rl else ()):
        v = b.get(key)
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"batch.{key} must be a positive integer, got {v!r}")
    mbt = b.get("micro_batch_tokens")
    if mbt is not None and (isinstance(mbt, bool) or not isinstance(mbt, int) or mbt < 1):
        raise ConfigError(f"batch.micro_batch_tokens must be a positive integer (tokens per micro-batch) or "
                          f"null, got {mbt!r}")
    if not is_rl:
        b["micro_batch_size"] = min(b["micro_batch_size"], b["prompts_per_step"])
        if b["prompts_per_step"] % b["micro_batch_size"]:
            raise ConfigError(f"batch.micro_batch_size={b['micro_batch_size']} must divide "
                              f"batch.prompts_per_step={b['prompts_per_step']} (sft trains on prompts_per_step examples)")
        return {"examples_per_step": b["prompts_per_step"],
                "grad_accumulation": b["prompts_per_step"] // b["micro_batch_size"]}
    n = b["prompts_per_step"] * b["samples_per_prompt"]
    if n % b["minibatch_size"]:
        raise ConfigError(f"batch.minibatch_size={b['minibatch_size']} must divide batch.prompts_per_step x "
                          f"batch.samples_per_prompt = {b['prompts_per_step']} x {b['samples_per_prompt']} = {n}")
    if b["minibatch_size"] % b["micro_batch_size"]:
        raise ConfigError(f"batch.micro_batch_size={b['micro_batch_size']} must divide "
                          f"batch.minibatch_size={b['minibatch_size']}")
    return {"rollouts_per_step": n,
            "updates_per_step": b["ppo_epochs"] * n // b["minibatch_size"],
            "grad_accumulation": b["minibatch_size"] // b["micro_batch_size"]}


# ------------------------------------------------------------------------------------------- the algo schema
ALGO_DIR = Path(__file__).resolve().parents[2] / "conf" / "algo"


def algo_schema(name: str, algo_dir: Path = ALGO_DIR) -> DictConfig:
    """The ``algo=<name>`` node as its own YAML file declares it: the file merged over the algo files its
    defaults list names (``- grpo``), in the list's order (``_self_`` last when absent, as Hydra does). Each
    file is the single place that node's keys, defaults and their paper provenance (the comments) are written;
    ``check_algo_keys`` validates the composed ``cfg.algo`` against it."""
    path = algo_dir / f"{name}.yaml"
    if not algo_dir.is_dir():
        raise ConfigError(f"no algorithm configs at {algo_dir}: steprl reads its defaults from the repository's conf/")
    if not path.is_file():
        valid = sorted(p.stem for p in algo_dir.glob("*.yaml"))
        raise ConfigError(f"algo={name}: no such algorithm; valid: {valid}")
    node = OmegaConf.load(path)
    defaults = list(node.pop("defaults", None) or [])
    if "_self_" not in defaults:
        defaults.append("_self_")
    merged = OmegaConf.create({})
    for entry in defaults:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, node)
        elif isinstance(entry, str):  # a sibling algo file (`- grpo`); `override /group...` entries are dicts
            merged = OmegaConf.merge(merged, algo_schema(entry, algo_dir))
    return merged


def node_defaults(algo: str, node: str) -> dict:
    """The defaults of ``algo.<node>`` as ``conf/algo/<algo>.yaml`` declares them (a fresh plain dict): what an
    algorithm built without a composed config (``PRIME(prm=None)``) fills missing keys with, so every default is
    written once, in the YAML, next to its paper provenance."""
    return OmegaConf.to_container(_schema(algo)[node], resolve=False)


_SCHEMAS: dict[str, DictConfig] = {}


def _schema(algo: str) -> DictConfig:
    if algo not in _SCHEMAS:
        _SCHEMAS[algo] = algo_schema(algo)
    return _SCHEMAS[algo]


def _algo_choices(cfg: DictConfig) -> list[str]:
    """The ``algo=`` choices this config may have been composed with, most specific first: its own Hydra node
    (the compose API), a resumed run's checkpoint, the running Hydra job."""
    out = []
    hydra_node = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if hydra_node is not None and OmegaConf.select(hydra_node, "runtime.choices.algo"):
        out.append(str(OmegaConf.select(hydra_node, "runtime.choices.algo")))
    if job.effective_choices is not None and job.effective_choices.get("algo"):
        out.append(str(job.effective_choices["algo"]))
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("algo"):
            out.append(str(HydraConfig.get().runtime.choices.get("algo")))
    except Exception:  # noqa: BLE001 - no Hydra job (a config built by hand)
        pass
    return out


def _is_interpolation(node: DictConfig | ListConfig, key) -> bool:
    return OmegaConf.is_interpolation(node, key)


def _kind(value) -> str | None:
    """A value's type as the schema sees it (None: anything goes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a mapping"
    return None


#: keys that moved, old dotted name -> new: a recipe or command line that still sets one is told where it went
MOVED_KEYS = {
    "reward.num_workers": "reward.pool.num_workers",
    "reward.timeout_s": "reward.pool.timeout_s",
    "reward.mp_context": "reward.pool.mp_context",
    "algo.prm": "reward.token",
}


def moved(name: str, cfg: DictConfig | None = None) -> str | None:
    """Where the dotted key ``name`` (or a node above it) moved to, or None; with ``cfg``, None as well where
    the old node is still in ``cfg`` (another algorithm's node of that name, e.g. PROPA's own ``algo.prm``)."""
    for old, new in MOVED_KEYS.items():
        if name == old or name.startswith(old + "."):
            if cfg is not None and OmegaConf.select(cfg, old) is not None:
                return None
            return new + name[len(old):]
    return None


def check_node_keys(given: DictConfig, schema: DictConfig, where: str) -> list[str]:
    """Problems of ``given`` against ``schema``, each naming the dotted key: keys the schema does not declare
    (with their close matches), and values whose type differs from the declared default's (null is always
    allowed: it switches an option off). Nodes whose schema default is null or an interpolation are not
    descended into (their content is another config group's, e.g. ``algo.advantage: ${advantage}``)."""
    problems: list[str] = []
    valid = [str(k) for k in schema.keys()]
    for key in given.keys():
        key = str(key)
        name = f"{where}.{key}"
        if key not in schema:
            if moved(name):
                problems.append(f"{name} is now {moved(name)}")
                continue
            near = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            problems.append(f"{name} is not a key of {where}: {hint}valid: {sorted(valid)}")
            continue
        if _is_interpolation(schema, key) or _is_interpolation(given, key):
            continue
        want, got = schema[key], given[key]
        if isinstance(want, DictConfig) and isinstance(got, DictConfig):
            problems += check_node_keys(got, want, name)
            continue
        kw, kg = _kind(want), _kind(got)
        if kw is not None and kg is not None and kw != kg:
            problems.append(f"{name}={OmegaConf.to_container(got) if kg in ('a list', 'a mapping') else got!r} "
                            f"must be {kw} (default {OmegaConf.to_container(want) if kw in ('a list', 'a mapping') else want!r})")
    return problems


def check_algo_keys(cfg: DictConfig) -> None:
    """Every key under ``algo`` (its own nodes and the shared ``loss``, ``kl`` and ``filters``) is one its
    ``conf/algo/<name>.yaml`` declares, with a value of the declared type: a misspelt key in a recipe file or on
    the command line stops the run at start-up, named with its valid neighbours."""
    if not ALGO_DIR.is_dir():
        return  # installed without the repository's conf/: nothing to check against
    target = str(cfg.algo.get("_target_", ""))
    names = [n for n in _algo_choices(cfg) if (ALGO_DIR / f"{n}.yaml").is_file() and _schema(n).get("_target_") == target]
    if names:
        name, schema = names[0], _schema(names[0])
    else:  # built by hand, or from an algo file of another config directory: the files of its class, together
        names = [p.stem for p in sorted(ALGO_DIR.glob("*.yaml")) if _schema(p.stem).get("_target_") == target]
        if not names:
            return
        name, schema = "|".join(names), OmegaConf.merge(*[_schema(n) for n in names])
    problems = check_node_keys(cfg.algo, schema, "algo")
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}  [algo={name}]")


REWARD_DIR = Path(__file__).resolve().parents[2] / "conf" / "reward"


def reward_pool_defaults() -> dict:
    """``reward.pool`` of ``reward=inline`` (``conf/reward/inline.yaml``), where its defaults are written."""
    return OmegaConf.to_container(OmegaConf.load(REWARD_DIR / "inline.yaml").pool)


def token_defaults(name: str) -> dict:
    """The keys and defaults of the token scorer ``reward/token=<name>`` (``conf/reward/token/<name>.yaml``)
    without its ``_target_``: what a scorer built without a composed config fills missing keys with."""
    node = OmegaConf.to_container(OmegaConf.load(REWARD_DIR / "token" / f"{name}.yaml"))
    node.pop("_target_", None)
    return node


def check_reward_keys(reward) -> list[str]:
    """Problems of a ``reward`` node (a mapping or DictConfig), each naming the dotted key: a key that is not
    one of ``pool``, ``outcome``, ``step``, ``token`` (a flat pool key of before: where it moved), a ``pool`` key
    ``conf/reward/inline.yaml`` does not declare, and a ``token`` key that the ``conf/reward/token/*.yaml`` file
    of its ``_target_`` does not declare (``outcome`` and ``step`` are checked where they are built)."""
    node = reward if isinstance(reward, DictConfig) else OmegaConf.create(dict(reward or {}))
    schema = OmegaConf.create({"pool": reward_pool_defaults(), "outcome": None, "step": None, "token": None})
    problems = check_node_keys(node, schema, "reward")
    pool = node.get("pool")
    if pool is not None and not isinstance(pool, DictConfig):
        problems.append(f"reward.pool must be a mapping (num_workers, timeout_s, mp_context), got {pool!r}")
    token = node.get("token")
    if isinstance(token, DictConfig) and not _is_interpolation(node, "token"):
        files = [OmegaConf.load(p) for p in sorted((REWARD_DIR / "token").glob("*.yaml"))]
        known = [f for f in files if f.get("_target_") == token.get("_target_")]
        if known:
            problems += check_node_keys(token, known[0], "reward.token")
    return problems


def check_config(cfg: DictConfig) -> dict[str, int]:
    """Reject inconsistent settings at compose time, naming the keys; return the derived batch numbers."""
    check_algo_keys(cfg)
    if cfg.get("reward") is not None:
        problems = check_reward_keys(cfg.reward)
        if problems:
            more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
            raise ConfigError(f"{problems[0]}{more}")
    is_rl = not str(cfg.algo._target_).endswith(".SFT")
    derived = check_batch(cfg.batch, is_rl)
    if is_rl:
        G = cfg.batch.samples_per_prompt
        adv = cfg.get("advantage") or {}
        target = adv.get("_target_", "")
        if G < 2 and (target.endswith("GroupAdvantage") or (target.endswith("ReinforcePP") and adv.get("baseline"))):
            raise ConfigError(f"batch.samples_per_prompt={G}: a group baseline ({adv.get('kind', 'reinforce_pp_baseline')})"
                              f" needs at least 2 samples per prompt (with 1 every advantage is 0)")
        if target.endswith(".GAE") and not str(cfg.algo._target_).endswith((".PPO", ".PPR")):
            raise ConfigError(f"advantage=gae needs a critic, which algo={cfg.algo._target_} does not have "
                              f"(use algo=ppo)")
        kl = cfg.algo.get("kl") or {}
        if kl.get("coef", 0) < 0:
            raise ConfigError(f"algo.kl.coef must be >= 0, got {kl.get('coef')}")
        band = (cfg.algo.get("filters") or {}).get("acc_band")
        if band is not None and (len(band) != 2 or not 0 <= band[0] <= band[1] <= 1):
            raise ConfigError(f"algo.filters.acc_band must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(band)}")
    tr = cfg.trainer
    check_hardware(cfg, is_rl)
    if tr.max_steps is None or tr.max_steps < 1:
        raise ConfigError(f"trainer.max_steps must be a positive number of RL steps, got {tr.max_steps}")
    vci = tr.get("val_check_interval")
    if isinstance(vci, int) and vci < 1:
        raise ConfigError(f"trainer.val_check_interval must be >= 1 step, got {vci}")
    return derived


def world_size_of(trainer: DictConfig) -> int | None:
    """Processes a trainer config will start (None where Lightning decides at run time: devices=-1/auto)."""
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1) or 1
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices) * nodes
    if isinstance(devices, str) and devices.isdigit():
        return int(devices) * nodes
    return None


def check_hardware(cfg: DictConfig, is_rl: bool = True) -> None:
    """Global batch sizes split evenly over ranks; 4-bit base models need a GPU; known optimisers."""
    world = world_size_of(cfg.trainer)
    b = cfg.batch
    if world and world > 1:
        keys = ("prompts_per_step", "minibatch_size") if is_rl else ("prompts_per_step",)
        for key in keys:
            if b[key] % world:
                raise ConfigError(f"batch.{key}={b[key]} is global (summed over ranks) and must be divisible by "
                                  f"the world size trainer.devices x trainer.num_nodes = {world}")
    opt = (cfg.get("optim") or {}).get("name", "adamw")
    if opt not in ("adamw", "adamw8bit", "paged_adamw8bit"):
        raise ConfigError(f"optim.name={opt!r} is not one of ['adamw', 'adamw8bit', 'paged_adamw8bit']")
    quant = (cfg.get("model") or {}).get("quantization")
    if quant not in (None, "4bit", "8bit"):
        raise ConfigError(f"model.quantization={quant!r} is not one of [null, '4bit', '8bit']")
    if quant and str(cfg.trainer.get("accelerator", "cpu")) == "cpu":
        raise ConfigError(f"model.quantization={quant} (QLoRA, bitsandbytes) needs a GPU: use hardware=gpu, or "
                          f"model.quantization=null on CPU")
    lora = (cfg.get("model") or {}).get("lora") or {}
    if quant and not lora.get("r"):
        raise ConfigError(f"model.quantization={quant} trains adapters on a frozen quantised base: set model.lora "
                          f"(e.g. model.lora.r=16), as in QLoRA")
    if lora.get("r") is not None and (not isinstance(lora.get("r"), int) or lora["r"] < 0):
        raise ConfigError(f"model.lora.r must be an integer >= 0 (0: no adapters), got {lora.get('r')!r}")


def banner(cfg: DictConfig, derived: dict[str, int]) -> str:
    b = cfg.batch
    keys = list(b) if "rollouts_per_step" in derived else ["prompts_per_step", "micro_batch_size"]
    parts = [f"{k}={b[k]}" for k in keys] + [f"{k}={v}" for k, v in derived.items()]
    return "[steprl] batch: " + ", ".join(parts)


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's config tree (src/train.py's config_path)


def compose_run(overrides: list[str], out_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """The config ``src/train.py`` would compose from ``overrides``, for code that builds a run in-process (tests,
    bench scripts, the GPU check): Hydra's runtime is set so ``${hydra:...}`` interpolations resolve, and with
    ``out_dir`` the run's output dir is ``out_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    if out_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out_dir)
            cfg.paths.root_output = str(out_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg
