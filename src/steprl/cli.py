"""What ``src/train.py`` does before anything heavy is imported: check the composed config and the outside world
(tracking server, model files, checkpoint) and turn every mistake into one line that names the key to change.

``preflight(cfg)`` returns the config to train with (on resume: the checkpoint's own config with the command
line's overrides on top, see ``steprl.resume``) or exits with status 2 and a one-line ``[steprl] error: ...``.
Only the standard library and OmegaConf are imported here; torch only when a checkpoint is read.
"""
from __future__ import annotations

import difflib
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from steprl.config import ConfigError, check_config, moved

CONF = Path(__file__).resolve().parents[2] / "conf"
#: top-level nodes that must be mappings; a ``node=value`` override of one of them replaces it with a string
NODES = ("trainer", "batch", "optim", "model", "task", "algo", "rollout", "val")


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit (no traceback)."""
    print(f"[steprl] error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# ------------------------------------------------------------------------------------------------ config shape
def check_shape(cfg: DictConfig) -> None:
    """Nodes that a ``node=value`` override turned into a string, and mandatory keys left at ``???``."""
    groups = sorted(p.name for p in CONF.iterdir() if p.is_dir())
    for node in NODES:
        if node in cfg and not isinstance(cfg[node], DictConfig) and node not in groups:
            value = OmegaConf.select(cfg, node)
            hint = (" The accelerator, devices and precision are chosen with hardware= "
                    f"({', '.join(_options('hardware'))}); single keys with trainer.<key>=..."
                    if node == "trainer" else f" Set its keys with {node}.<key>=...")
            raise ConfigError(f"{node}={value} replaces the whole {node} node with a string: {node} is not a config "
                              f"group.{hint}")
    for key in OmegaConf.missing_keys(cfg):
        if key.startswith("hydra."):
            continue
        example = _example(key)
        group = key.split(".")[0]
        choice = _choice(group)
        raise ConfigError(f"{key} is required{f' with {group}={choice}' if choice else ''}: give it on the command "
                          f"line, e.g. {example or key + '=<value>'}")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _choice(group: str) -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except Exception:  # no Hydra app (compose API in tests)
        return None


def _example(key: str) -> str | None:
    """``key=...`` from an ``Example: key=...`` comment of the chosen group's yaml file."""
    group = key.split(".")[0]
    choice = _choice(group)
    if not choice:
        return None
    path = CONF / group / f"{choice}.yaml"
    if path.exists():
        m = re.search(r"Example:\s*(" + re.escape(key) + r"=\S+)", path.read_text())
        if m:
            return m.group(1)
    return None


# ------------------------------------------------------------------------------------------------ typos
def near_keys(cfg: DictConfig, key: str, n: int = 3) -> list[str]:
    """Existing keys that end like ``key`` (``algo.lr`` -> ``optim.lr``) or are spelled like it."""
    leaves = _leaf_keys(OmegaConf.to_container(cfg, resolve=False))
    tail = key.split(".")[-1]
    same_tail = [k for k in leaves if k.split(".")[-1] == tail]
    close = difflib.get_close_matches(key, leaves, n=n, cutoff=0.6)
    out = []
    for k in same_tail + close:
        if k not in out:
            out.append(k)
    return out[:n + 2]


def _leaf_keys(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += _leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
        return out
    return [prefix.rstrip(".")]


def explain_override_error(message: str, overrides: list[str]) -> str | None:
    """A better message for Hydra's "Could not override 'x.y'" (a key that does not exist): the keys near it,
    looked up in the config composed without the failing override. None when it is another error."""
    m = re.search(r"Could not override '([^']+)'", message)
    if not m:
        return None
    key = m.group(1)
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key and not o.startswith("hydra.")]
    try:
        from hydra import compose

        cfg = compose("train", overrides=rest)
    except Exception:
        return None
    new = moved(key, cfg)
    if new:  # a key of before, set where it used to be
        return f"{key} is now {new}"
    near = near_keys(cfg, key)
    hint = f"; keys near it: {', '.join(near)}" if near else ""
    return (f"{key} is not a key of this config{hint}. (Adding a new key with +{key}=... is only for keys the "
            f"code reads.)")


def install_hydra_error_hints() -> None:
    """Rewrite Hydra's composition errors that lead nowhere (``Could not override 'algo.lr'`` followed by the
    advice to append ``+algo.lr``) into the keys that exist near the typo. Uses Hydra's ``run_and_report``
    (Hydra 1.3); where it is missing Hydra's own message stays."""
    try:
        import hydra._internal.utils as hu
        from hydra.errors import ConfigCompositionException
    except ImportError:
        return
    original = getattr(hu, "run_and_report", None)
    if original is None or getattr(original, "_steprl", False):
        return

    def run_and_report(func):
        def wrapped():
            try:
                return func()
            except ConfigCompositionException as e:
                better = explain_override_error(str(e), [a for a in sys.argv[1:] if not a.startswith("-")])
                if better:
                    fail(better)
                raise
        return original(wrapped)

    run_and_report._steprl = True
    hu.run_and_report = run_and_report


# ------------------------------------------------------------------------------------------------ outside world
def check_tracking_uri(cfg: DictConfig, timeout_s: float = 5.0) -> None:
    """An MLflow server must answer within ``timeout_s``; a sqlite store's directory must be creatable."""
    lg = cfg.get("logger")
    if not lg or "MLFlowLogger" not in str(lg.get("_target_", "")):
        return
    uri = str(lg.get("tracking_uri") or "")
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as r:
                r.read(64)
        except urllib.error.HTTPError:
            return  # it answered (a server without /health still speaks HTTP)
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            what = (f"no answer within {timeout_s:g} s" if isinstance(reason, (socket.timeout, TimeoutError))
                    or time.monotonic() - t0 >= timeout_s else f"cannot connect ({reason})")
            raise ConfigError(f"logger.tracking_uri={uri}: {what}. Start the MLflow server, or log locally with "
                              f"logger.tracking_uri=sqlite:///outputs/mlflow.db (or logger=csv / logger=none)")
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"logger.tracking_uri={uri}: cannot create {db.parent} ({e.strerror})") from None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://", 1)[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _in_hf_cache(repo: str) -> bool:
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" /
                                                                     "huggingface")) / "hub")
    snaps = root / f"models--{repo.replace('/', '--')}" / "snapshots"
    return snaps.is_dir() and any(snaps.iterdir())


def check_model_source(cfg: DictConfig, key: str = "model.path") -> None:
    """A hub model that is neither a local directory nor cached, with the hub unreachable, fails now (not after
    a minute of retries) and says how to point at a local copy."""
    path = OmegaConf.select(cfg, key)
    if not path or not isinstance(path, str) or path.startswith("steprl:"):
        return
    if Path(path).expanduser().exists():
        return
    if path.startswith(("/", "./", "../", "~")) or path.count("/") != 1:
        raise ConfigError(f"{key}={path}: no such directory (give a local model directory or a hub id "
                          f"such as Qwen/Qwen2.5-0.5B-Instruct)")
    if _in_hf_cache(path) or _hub_reachable():
        return
    raise ConfigError(f"{key}={path} is a Hugging Face hub id, it is not in the local cache and the hub cannot be "
                      f"reached from this machine: download it where there is a network (huggingface-cli download "
                      f"{path} --local-dir <dir>) and set {key}=<local dir>")


def check_packaged_models(cfg: DictConfig) -> None:
    """A ``pkg:<module>`` model (DRM's relevance encoder: all-MiniLM-L6-v2 from the ``steprl[drm]`` extra) whose
    package is not installed fails now, naming the extra and the ``tiny`` stand-in."""
    import importlib.util

    for key in ("algo.relevance", "algo.coherence"):
        node = OmegaConf.select(cfg, key)
        if not isinstance(node, DictConfig) or node.get("tiny") is not None:
            continue
        path = node.get("path")
        if isinstance(path, str) and path.startswith("pkg:") and importlib.util.find_spec(path[4:]) is None:
            raise ConfigError(f"{key}.path={path} needs the package {path[4:]}, which is not installed: "
                              f"pip install \"steprl[drm]\" (or set {key}.path to a local directory or a hub id; "
                              f"{key}.tiny={{hidden_size:32,num_layers:2,num_heads:2,intermediate_size:64}} runs "
                              f"a random-weight stand-in, a plumbing check, not a trained model)")


# ------------------------------------------------------------------------------------------------ entry
def preflight(cfg: DictConfig) -> DictConfig:
    """All checks in order; on resume the merged config. Exits with a one-line error on a ConfigError."""
    from steprl import job, resume

    job.reset()
    try:
        overrides = job.task_overrides()
        check_shape(cfg)
        if cfg.get("ckpt_path"):
            cfg = resume.resume_config(cfg, overrides)
        check_config(cfg)
        check_tracking_uri(cfg)
        check_model_source(cfg)
        check_packaged_models(cfg)
    except ConfigError as e:
        fail(str(e))
    return cfg
