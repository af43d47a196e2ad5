"""Secrets out of everything a run writes: config values under secret-looking keys, URL userinfo, bearer tokens.

    redact(obj)           a copy of a config container (dicts, lists, scalars) with secrets replaced by ``***``
    redact_text(s)        URL userinfo (``http://user:pass@host`` -> ``http://***@host``), secret query parameters
                          (``?api_key=...``) and ``Bearer <token>`` in free text (log lines, error messages)
    redact_override(s)    one Hydra override ``key=value``: the value when the key looks secret, else redact_text
    is_secret_key(k)      ``api_key``, ``token``, ``password``, ``secret``, ``authorization``, ... (see below)
    RedactingFilter       a logging filter that applies redact_text to every record (message and traceback)
    RedactHydraFiles      a Hydra callback (conf/hydra/default.yaml) that rewrites ``.hydra/{config,hydra,
                          overrides}.yaml`` redacted at job start (Hydra writes them itself before any of our code
                          runs) and puts a RedactingFilter on the console and log-file handlers

A key is secret when its words (split at ``_ - .`` and camelCase) include a secret word (password, passwd,
secret, credential(s), authorization, auth, cookie, apikey), end in ``token`` (``token``, ``access_token``,
``hf_token``; not ``max_tokens``), or end in ``key`` after ``api``/``private``/``access``/``secret``/``auth``
(``api_key``; not ``state_key``). A key whose last word is ``env`` or ``var`` names a variable, not a secret
(``api_key_env``), and is kept. ``None`` and empty values are kept, so a redacted config still says what is unset.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MASK", "is_secret_key", "redact", "redact_text", "redact_override", "redact_hydra_dir",
           "RedactingFilter", "install_log_filter", "RedactHydraFiles"]

MASK = "***"
_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "secrets", "credential", "credentials", "authorization",
                 "auth", "cookie", "apikey", "privatekey"}
_KEY_QUALIFIERS = {"api", "private", "access", "secret", "auth", "signing", "encryption", "client"}
_NAME_SUFFIXES = {"env", "var"}
_WORD_RE = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/@\s?#]+)@")
_QUERY_RE = re.compile(r"(?P<name>[?&;](?:[A-Za-z0-9_\-]*?)(?:api[_\-]?key|token|password|passwd|secret|key|sig|"
                       r"signature|auth)=)(?P<value>[^&#;\s'\"]+)", re.IGNORECASE)
_BEARER_RE = re.compile(r"\b(?P<kind>Bearer|Basic|Token)\s+(?P<value>[A-Za-z0-9._~+/=\-]{8,})")
# `key: value` / `"key": "value"` inside dict literals (a Hydra override `x={api_key: sk-1}`, a JSON body)
_COLON_RE = re.compile(r"(?P<key>(?<![\w\-])[A-Za-z_][\w\-]*)(?P<q1>[\"']?)(?P<sep>\s*:\s*)(?P<q2>[\"']?)"
                       r"(?P<value>[^\"',}\]\s]+)")
_PAIR_RE = re.compile(r"(?P<key>(?<![\w.\-])[A-Za-z_][\w.\-]*)=(?P<value>[^,\s&;]*)")


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(str(key))]


def is_secret_key(key: Any) -> bool:
    words = _words(key)
    if not words or words[-1] in _NAME_SUFFIXES:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    if words[-1] == "token":
        return True
    if words[-1] == "key":
        return len(words) == 1 or words[-2] in _KEY_QUALIFIERS
    return False


def redact_text(text: str) -> str:
    """URL userinfo, secret-looking query parameters and bearer/basic credentials in ``text`` masked."""
    if not isinstance(text, str) or not text:
        return text
    out = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    out = _QUERY_RE.sub(lambda m: f"{m['name']}{MASK}", out)
    out = _BEARER_RE.sub(lambda m: f"{m['kind']} {MASK}", out)
    out = _COLON_RE.sub(lambda m: f"{m['key']}{m['q1']}{m['sep']}{m['q2']}{MASK}" if is_secret_key(m["key"])
                        else m[0], out)
    out = _PAIR_RE.sub(lambda m: f"{m['key']}={_mask(m['value'])}" if is_secret_key(m["key"].split(".")[-1])
                       else m[0], out)
    return out


def _mask(value: Any) -> Any:
    if value is None or value == "" or (isinstance(value, (Mapping, list, tuple)) and not value):
        return value
    return MASK


def redact(obj: Any, key: Any = None) -> Any:
    """A redacted copy of ``obj`` (plain containers: dicts, lists, tuples, scalars). ``key``: the key ``obj``
    is stored under (its value is masked whole when the key looks secret)."""
    if key is not None and is_secret_key(key):
        return _mask(obj)
    if isinstance(obj, Mapping):
        return {k: redact(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_override(obj) if _OVERRIDE_RE.match(obj) else redact_text(obj)
    return obj


_OVERRIDE_RE = re.compile(r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z_][\w.@/\-]*)=(?P<value>.*)$", re.DOTALL)


def redact_override(item: str) -> str:
    """``judge.openai.extra_body.api_key=sk-1`` -> ``judge.openai.extra_body.api_key=***``; other overrides keep
    their key and get :func:`redact_text` on the value."""
    m = _OVERRIDE_RE.match(item)
    if not m:
        return redact_text(item)
    last = re.split(r"[.@/]", m["key"])[-1]
    value = m["value"]
    return f"{m['prefix']}{m['key']}={_mask(value) if is_secret_key(last) else redact_text(value)}"


def redact_hydra_dir(output_dir: str | Path, subdir: str | None = ".hydra") -> list[Path]:
    """Rewrite ``<output_dir>/<subdir>/*.yaml`` redacted (only the files that change); returns those files."""
    import yaml

    if subdir is None:
        return []
    changed = []
    for path in sorted(Path(output_dir, subdir).glob("*.yaml")):
        text = path.read_text()
        data = yaml.safe_load(text)
        clean = redact(data)
        if clean != data:
            tmp = path.with_name(path.name + ".redact.tmp")
            tmp.write_text(yaml.safe_dump(clean, sort_keys=False, allow_unicode=True))
            tmp.replace(path)
            changed.append(path)
    return changed


class RedactingFilter(logging.Filter):
    """Masks secrets (:func:`redact_text`) in every record that passes: its message and its traceback text."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the handler's business
            return True
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(self._formatter.formatException(record.exc_info))
        return True


def install_log_filter(*loggers: logging.Logger) -> None:
    """Put one :class:`RedactingFilter` on every handler of the root logger (and of ``loggers``)."""
    for lg in (logging.getLogger(), logging.getLogger("hydra"), *loggers):
        for handler in lg.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is a dependency
    _HydraCallback = object  # type: ignore[assignment,misc]


class RedactHydraFiles(_HydraCallback):
    """Hydra writes ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` before the task runs, secrets
    and all; at job start this callback rewrites them with :func:`redact` (``hydra.callbacks`` in
    conf/hydra/default.yaml). It also filters the console and log-file handlers Hydra configured (the multirun
    launcher prints each job's overrides)."""

    def on_run_start(self, config, **kwargs) -> None:
        install_log_filter()

    def on_multirun_start(self, config, **kwargs) -> None:
        install_log_filter()

    def on_job_start(self, config, **kwargs) -> None:
        install_log_filter()
        hc = config.hydra
        redact_hydra_dir(hc.runtime.output_dir, hc.output_subdir)
