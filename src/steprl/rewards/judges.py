"""Step judges: one interface, three backends (exact rule checker, local HF model, OpenAI-compatible endpoint).

    JudgeRequest(question, response, steps, reference, meta)  ->  StepJudge.score  ->  JudgeResult
                                                                     |
        RuleStepJudge(task)             the task's exact step checker (``task.score_steps``)
        PromptedJudge(backend, template, parser)
                                        a generative judge: the template is formatted with the request, sent
                                        through a ChatBackend, the reply parsed into per-step scores
    ChatBackend.complete(prompts) -> replies (None where the call failed after its retries)
        ScriptedBackend(fn)             a Python function as the "model" (tests, scripted responders)
        HFChatBackend(path, ...)        a local causal LM with its chat template, greedy decoding
        OpenAIChatBackend(base_url, model, api_key_env, retries, timeout_s, max_concurrency)
                                        ``POST {base_url}/chat/completions`` from a thread pool, with retries and
                                        exponential backoff; ``probe()`` fails fast (at start-up) on a dead endpoint

A reply that does not parse gives ``JudgeResult(parsed=False)`` (its step scores are whatever the parser's
fallback is, NaN by default) and is counted in ``judge/parse_failures``; a call that failed (a request past its
total ``timeout_s``, a refused or reset connection, an HTTP error, a reply that is not HTTP, a body that is not a
chat completion) is counted in ``judge/call_failures`` and gives ``parsed=False`` with all-NaN scores. How an
unparsed judgement is scored is the calling algorithm's business (its spec says). Nothing here raises on what a
model or an endpoint writes; configuration errors, a dead endpoint at start-up and a judge whose every call
failed for ``max_failed_steps`` steps in a row (:class:`JudgeFailing`) do raise.

Templates are ``str.format`` templates with the fields ``question``, ``response``, ``steps`` (numbered, one
per line: ``Step 1: ...``), ``num_steps`` and ``reference``; a ``{"system": ..., "user": ...}`` pair makes a
two-message chat. Named templates + parsers are in :data:`TEMPLATES` (``step_labels``, ``tp_grpo``,
``score``); algorithms with their own prompt (PPR, PC-GRPO) pass template and parser objects directly.
"""
from __future__ import annotations

import base64
import difflib
import functools
import http.client
import importlib
import inspect
import json
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from steprl.config import ConfigError
from steprl.utils.redact import redact_text

log = logging.getLogger(__name__)

__all__ = [
    "JudgeRequest",
    "JudgeResult",
    "JudgeUnavailable",
    "JudgeFailing",
    "ChatBackend",
    "ScriptedBackend",
    "HFChatBackend",
    "OpenAIChatBackend",
    "StepJudge",
    "RuleStepJudge",
    "PromptedJudge",
    "TEMPLATES",
    "build_judge",
    "format_steps",
    "parse_step_labels",
    "parse_json_labels",
    "parse_scalar_score",
]

Prompt = "str | list[dict]"


# ------------------------------------------------------------------------------------------------ data
@dataclass
class JudgeRequest:
    question: str                 # the prompt / task statement
    response: str                 # the full model response
    steps: list[str]              # the response split into steps (task splitter or agent turns)
    reference: str | None = None  # gold answer / solution when the judge may see it
    meta: dict = field(default_factory=dict)  # e.g. {"sample": Sample, "correct": bool}


@dataclass
class JudgeResult:
    step_scores: list[float]      # one per step (NaN where the judge gave none)
    final: float | None = None    # a whole-response score when the judge gives one
    parsed: bool = True           # False: the reply did not parse, or the call failed
    text: str = ""                # raw reply (for sample tables)
    labels: list[str] | None = None  # per-step categorical labels where the judge gives them (TP-GRPO)


class JudgeUnavailable(RuntimeError):
    """The judge cannot be used at all (dead endpoint, unknown model): raised at start-up by ``probe``."""


class JudgeFailing(JudgeUnavailable):
    """Every call of the judge failed in ``max_failed_steps`` consecutive steps: training would go on without
    the judge's signal, so it stops."""


# ------------------------------------------------------------------------------------------------ backends
class ChatBackend:
    """Text in, text out. ``complete`` never raises on a failed call: that reply is ``None`` and counted."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts = {"calls": 0, "failures": 0, "retries": 0, "timeouts": 0}
        self.last_error = ""  # why the latest failed call failed (secrets redacted), for console warnings

    def complete(self, prompts: Sequence[str | list[dict]]) -> list[str | None]:
        raise NotImplementedError

    def probe(self) -> None:
        """Raise :class:`JudgeUnavailable` if the backend cannot answer (called once at start-up)."""

    def close(self) -> None:
        pass

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def describe(self) -> str:
        """What the judge is, for error messages (no secrets)."""
        return type(self).__name__


def as_messages(prompt: str | list[dict]) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def as_text(prompt: str | list[dict]) -> str:
    """A chat as plain text (for backends without a chat template)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m.get("content", "")) for m in prompt)


class ScriptedBackend(ChatBackend):
    """``fn(prompt) -> reply``: a Python function plays the judge model. An exception is a failed call."""

    def __init__(self, fn: Callable[[str | list[dict]], str] | str):
        super().__init__()
        self.fn = _resolve_callable(fn) if isinstance(fn, str) else fn

    def complete(self, prompts):
        out = []
        for p in prompts:
            self._count("calls")
            try:
                reply = self.fn(p)
                out.append(None if reply is None else str(reply))
            except Exception as e:  # noqa: BLE001 - a scripted responder failing is a failed call
                log.debug("scripted judge failed: %s", e)
                self.last_error = redact_text(f"{type(e).__name__}: {e}")[:300]
                out.append(None)
            if out[-1] is None:
                self._count("failures")
        return out


class HFChatBackend(ChatBackend):
    """A local causal LM as judge: the tokenizer's chat template (plain text if it has none), greedy decoding.

    ``path``: a local dir, hub id or ``steprl:<name>``; or pass ``model`` and ``tokenizer`` objects.
    """

    def __init__(self, path: str | None = None, model=None, tokenizer=None, max_new_tokens: int = 512,
                 batch_size: int = 8, dtype: str = "float32", device: str | None = None,
                 max_prompt_tokens: int | None = None, temperature: float = 0.0):
        super().__init__()
        if model is None:
            if not path:
                raise ValueError("judge.hf.path must name the judge model (a directory, hub id or steprl:<name>)")
            from steprl.models import load_model

            model, tokenizer = load_model(path=path, dtype=dtype)
        if tokenizer is None:
            raise ValueError("HFChatBackend: a model object needs its tokenizer")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if device is not None:
            self.model.to(device)
        self.max_new_tokens, self.batch_size = int(max_new_tokens), max(1, int(batch_size))
        self.max_prompt_tokens, self.temperature = max_prompt_tokens, float(temperature)

    def render(self, prompt: str | list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False,
                                                      add_generation_prompt=True)
        return as_text(prompt)

    def complete(self, prompts):
        import torch

        out: list[str | None] = []
        device = next(self.model.parameters()).device
        for i in range(0, len(prompts), self.batch_size):
            chunk = [self.render(p) for p in prompts[i:i + self.batch_size]]
            self._count("calls", len(chunk))
            try:
                kw = {}
                if self.max_prompt_tokens:
                    kw = {"truncation": True, "max_length": int(self.max_prompt_tokens)}
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False, **kw)
                enc = {k: v.to(device) for k, v in enc.items()}
                gen = {"do_sample": False} if self.temperature <= 0 else {"do_sample": True,
                                                                           "temperature": self.temperature}
                with torch.no_grad():
                    ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                              pad_token_id=self.tokenizer.pad_token_id, **gen)
                new = ids[:, enc["input_ids"].shape[1]:]
                out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
            except Exception as e:  # noqa: BLE001 - e.g. out of memory on one batch: those calls fail
                log.warning("hf judge: generation failed for %d prompts: %s", len(chunk), e)
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                self._count("failures", len(chunk))
                out.extend([None] * len(chunk))
        return out


_MAX_REPLY_BYTES = 64 << 20  # a reply body larger than this is not a chat completion: a failed call


class _Deadline:
    """The total time of one request: when it runs out, the request's sockets are shut down, so a read that is
    waiting (or a server trickling bytes, which resets every per-read socket timeout) ends at once."""

    def __init__(self, seconds: float):
        self.seconds, self.expired = float(seconds), False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def attach(self, sock) -> None:
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, AttributeError):  # already closed / detached (wrapped by TLS)
        pass


def _watched(base: type) -> type:
    """An http.client connection class whose sockets (the TCP one and, for HTTPS, its TLS wrapper) are handed to
    the request's :class:`_Deadline`."""

    class Watched(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args, deadline: _Deadline, **kwargs):
            super().__init__(*args, **kwargs)
            self._deadline, create = deadline, self._create_connection

            def create_and_watch(*a, **kw):
                sock = create(*a, **kw)
                deadline.attach(sock)
                return sock

            self._create_connection = create_and_watch

        def connect(self):
            super().connect()
            self._deadline.attach(self.sock)

    Watched.__name__ = f"Watched{base.__name__}"
    return Watched


_WatchedHTTP, _WatchedHTTPS = _watched(http.client.HTTPConnection), _watched(http.client.HTTPSConnection)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTP, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        kw = {"context": self._context}
        if hasattr(self, "_check_hostname"):  # Python < 3.12
            kw["check_hostname"] = self._check_hostname
        return self.do_open(functools.partial(_WatchedHTTPS, deadline=self._deadline), req, **kw)


class OpenAIChatBackend(ChatBackend):
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM, SGLang, TGI, OpenAI, ...).

    ``base_url`` includes the version prefix (``http://host:8000/v1``); ``api_key_env`` names the environment
    variable holding the key (unset is fine for a local server: no Authorization header is sent). Credentials in
    the URL (``http://user:pass@host/v1``) are taken out of it and sent as HTTP basic auth; messages show the
    URL without them. Each prompt is one request; up to ``max_concurrency`` run at once in a thread pool.

    ``timeout_s`` bounds the TOTAL time of one request (connect, send, wait, read), not each socket read: at the
    deadline the request's socket is shut down. A request that fails in any way -- timeout, refused or reset
    connection, a reply that is not HTTP (``http.client.BadStatusLine``, ``IncompleteRead``, ``LineTooLong``),
    HTTP 429/5xx, a body that is not a chat completion -- is retried up to ``retries`` times with exponential
    backoff (``backoff_s · 2^k``, at most ``max_backoff_s``); then its reply is ``None`` (counted in
    ``counts["failures"]``). HTTP 4xx other than 408/429 is not retried. Nothing the endpoint does raises.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 120.0, retries: int = 1, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 max_concurrency: int = 16, temperature: float = 0.0, max_tokens: int | None = 1024,
                 probe_timeout_s: float = 10.0, extra_body: Mapping[str, Any] | None = None):
        super().__init__()
        if not base_url or not isinstance(base_url, str):
            raise ValueError("judge.openai.base_url must be set, e.g. http://127.0.0.1:8000/v1")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge.openai.base_url={redact_text(base_url)!r} must start with http:// or https://")
        if not model:
            raise ValueError("judge.openai.model must name the served model (vLLM: --served-model-name)")
        if int(max_concurrency) < 1 or int(retries) < 0 or not float(timeout_s) > 0:
            raise ValueError(f"judge.openai: max_concurrency={max_concurrency} must be >= 1, retries={retries} "
                             f">= 0 and timeout_s={timeout_s} > 0")
        self.base_url, self._basic_auth = _split_userinfo(base_url.rstrip("/"))
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.max_backoff_s, self.max_concurrency = float(max_backoff_s), int(max_concurrency)
        self.temperature, self.max_tokens = float(temperature), max_tokens
        self.probe_timeout_s, self.extra_body = float(probe_timeout_s), dict(extra_body or {})
        self._pool: ThreadPoolExecutor | None = None

    def describe(self) -> str:
        return f"judge endpoint {self.base_url} (judge.openai.base_url)"

    # ----- http
    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        elif self._basic_auth:
            h["Authorization"] = f"Basic {self._basic_auth}"
        return h

    def _request(self, method: str, path: str, body: dict | None, timeout: float) -> Any:
        """One HTTP exchange that takes at most ``timeout`` seconds in all (:class:`TimeoutError` after that).
        HTTP errors raise :class:`urllib.error.HTTPError` with their body (up to 2 kB) in ``e.text``."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=self._headers())
        with _Deadline(timeout) as deadline:
            opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
            try:
                try:
                    with opener.open(req, timeout=timeout) as resp:
                        if resp.length is not None and resp.length > _MAX_REPLY_BYTES:
                            raise ValueError(f"reply body of {resp.length} bytes (Content-Length) is too large")
                        # with a Content-Length, read() raises IncompleteRead on a short body (read(n) would not)
                        raw = resp.read() if resp.length is not None else resp.read(_MAX_REPLY_BYTES + 1)
                except urllib.error.HTTPError as e:
                    e.text = _safe_body(e)
                    raise
                if len(raw) > _MAX_REPLY_BYTES:
                    raise ValueError(f"reply body larger than {_MAX_REPLY_BYTES >> 20} MiB")
                return json.loads(raw.decode("utf-8"))
            except Exception as e:
                if deadline.expired and not isinstance(e, urllib.error.HTTPError):
                    raise TimeoutError(f"no complete reply within {timeout:g}s ({type(e).__name__})") from e
                raise

    def _one(self, prompt) -> str | None:
        body = {"model": self.model, "messages": as_messages(prompt), "temperature": self.temperature,
                **({"max_tokens": self.max_tokens} if self.max_tokens else {}), **self.extra_body}
        self._count("calls")
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            try:
                reply = self._request("POST", "/chat/completions", body, self.timeout_s)
                content = reply["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise ValueError(f"message.content is {type(content).__name__}, not a string")
                return content
            except urllib.error.HTTPError as e:
                self.last_error = f"HTTP {e.code}: {redact_text(getattr(e, 'text', ''))[:200]}"
                if e.code not in (408, 429) and e.code < 500:
                    log.warning("%s: HTTP %d (not retried): %s", self.describe(), e.code, self.last_error)
                    break
                log.debug("judge endpoint: HTTP %d, attempt %d", e.code, attempt + 1)
            except Exception as e:  # noqa: BLE001 - timeouts, refused/reset connections, replies that are not
                # HTTP (http.client.HTTPException), bodies that are not a chat completion: all a failed attempt
                if _is_timeout(e):
                    self._count("timeouts")
                self.last_error = redact_text(f"{type(e).__name__}: {e}")[:300]
                log.debug("judge endpoint: %s, attempt %d", self.last_error, attempt + 1)
        self._count("failures")
        return None

    def complete(self, prompts):
        if not prompts:
            return []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="judge")
        return list(self._pool.map(self._one, prompts))

    def probe(self) -> None:
        """Fail fast: the endpoint must answer ``GET /models`` (or, where that route is missing, a one-token
        chat completion) within ``probe_timeout_s``, and serve ``model`` when it lists its models."""
        where = self.describe()
        try:
            listing = self._request("GET", "/models", None, self.probe_timeout_s)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise JudgeUnavailable(f"{where} refused the API key (HTTP {e.code}); set the key in the "
                                       f"environment variable {self.api_key_env!r} (judge.openai.api_key_env)") from None
            listing = None  # no /models route: try a real request below
        except Exception as e:  # noqa: BLE001 - whatever the endpoint did, it cannot be used
            raise JudgeUnavailable(f"{where} is not reachable within {self.probe_timeout_s:g}s: "
                                   f"{redact_text(f'{type(e).__name__}: {e}')}. Start the server first (e.g. "
                                   f"`vllm serve <model> --port 8000`) or fix the URL") from None
        if listing is not None:
            ids = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)] if isinstance(listing, dict) else []
            if ids and self.model not in ids:
                raise JudgeUnavailable(f"{where} does not serve model {self.model!r} (judge.openai.model); "
                                       f"it serves {ids}")
            return
        saved = (self.retries, self.timeout_s, self.max_tokens)
        self.retries, self.timeout_s, self.max_tokens = 0, self.probe_timeout_s, 1
        try:
            if self._one("ping") is None:
                raise JudgeUnavailable(f"{where} did not answer a one-token chat completion for model "
                                       f"{self.model!r}: {self.last_error}")
        finally:
            self.retries, self.timeout_s, self.max_tokens = saved

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``http://user:pass@host/v1`` -> (``http://host/v1``, base64 ``user:pass`` for basic auth)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    return urllib.parse.urlunsplit(parts._replace(netloc=hostport)), base64.b64encode(token.encode()).decode()


def _is_timeout(e: BaseException) -> bool:
    if isinstance(e, TimeoutError):
        return True
    reason = getattr(e, "reason", None)
    return isinstance(reason, TimeoutError) or "timed out" in str(e)


def _safe_body(e: urllib.error.HTTPError) -> str:
    try:
        return e.read(2000).decode("utf-8", "replace")[:200]
    except Exception:  # noqa: BLE001
        return ""


# ------------------------------------------------------------------------------------------------ judges
class StepJudge:
    """``score(requests) -> results`` (one per request, same order). Counts ``parse_failures`` and
    ``call_failures`` (judged requests) for :meth:`metrics`."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "parse_failures": 0, "call_failures": 0}

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        raise NotImplementedError

    def probe(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """``judge/requests``, ``judge/parse_failures``, ``judge/call_failures`` since the last reset."""
        with self._lock:
            out = {f"judge/{k}": float(v) for k, v in self.counts.items()}
            if reset:
                self.counts = dict.fromkeys(self.counts, 0)
        return out


class RuleStepJudge(StepJudge):
    """The task's exact step checker: ``step_scores = task.score_steps(sample, response)`` (one per step of the
    task's splitter) and ``final = task.verify(sample, response)``. The request's ``meta["sample"]`` is the
    task's Sample; without it one is made from ``question`` (the prompt) and ``reference`` (the answer)."""

    def __init__(self, task):
        super().__init__()
        if task is None or not getattr(task, "has_step_checker", False):
            raise ValueError(f"judge=rule needs a task with an exact step checker (task.has_step_checker); "
                             f"{type(task).__name__ if task is not None else 'no task'} has none: use "
                             f"judge=hf or judge=openai")
        self.task = task

    def score(self, requests):
        from steprl.rollout.types import Sample

        out = []
        for req in requests:
            self._count("requests")
            sample = req.meta.get("sample") or Sample(prompt=req.question, answer=req.reference)
            scores = self.task.score_steps(sample, req.response) or []
            n = len(req.steps)
            if n and len(scores) != n:  # the caller split differently: keep the first n, NaN for the rest
                scores = (list(scores) + [math.nan] * n)[:n]
            final = self.task.verify(sample, req.response) if (sample.answer is not None or sample.meta) else None
            out.append(JudgeResult(step_scores=[float(s) for s in scores], final=final, parsed=True,
                                   text="rule"))
        return out


class _Fields(dict):
    """Template fields; a field the request does not provide renders as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""


def format_steps(steps: Sequence[str]) -> str:
    return "\n".join(f"Step {k + 1}: {s.strip()}" for k, s in enumerate(steps))


Parser = Callable[[str, JudgeRequest], JudgeResult]


class PromptedJudge(StepJudge):
    """A generative judge: ``template`` formatted with the request -> ``backend`` -> ``parser(reply, request)``.

    ``template``: a format string, or a mapping ``{"system": str, "user": str}`` (both formatted). The
    parser returns a :class:`JudgeResult` (``parsed=False`` when the reply does not parse); a parser that
    raises counts as a parse failure with NaN scores.

    Health: each :meth:`score` call is one judged batch (one per training step for TP-GRPO, PPR and DRM). When
    more than ``warn_failure_rate`` of a batch's calls fail, a warning goes to the console (the first such batch,
    then every 10th in a row) with the last failure's reason; after ``max_failed_steps`` batches in a row in
    which every call failed, :class:`JudgeFailing` stops the run (``0`` / ``None``: never).
    """

    def __init__(self, backend: ChatBackend, template: str | Mapping[str, str], parser: Parser,
                 warn_failure_rate: float | None = 0.25, max_failed_steps: int | None = 3):
        super().__init__()
        if warn_failure_rate is not None and not 0.0 <= float(warn_failure_rate) <= 1.0:
            raise ValueError(f"judge.warn_failure_rate={warn_failure_rate} must lie in [0, 1] (or be null)")
        if max_failed_steps is not None and int(max_failed_steps) < 0:
            raise ValueError(f"judge.max_failed_steps={max_failed_steps} must be >= 0 (0 or null: never stop)")
        self.backend, self.template, self.parser = backend, template, parser
        self.warn_failure_rate = None if warn_failure_rate is None else float(warn_failure_rate)
        self.max_failed_steps = int(max_failed_steps or 0)
        self._bad_streak = self._all_failed_streak = 0

    def render(self, req: JudgeRequest) -> str | list[dict]:
        fields = {"question": req.question, "response": req.response, "steps": format_steps(req.steps),
                  "num_steps": len(req.steps), "reference": req.reference or "", **req.meta.get("fields", {})}
        fields = _Fields(fields)
        if isinstance(self.template, Mapping):
            msgs = []
            if self.template.get("system"):
                msgs.append({"role": "system", "content": self.template["system"].format_map(fields)})
            msgs.append({"role": "user", "content": self.template["user"].format_map(fields)})
            return msgs
        return self.template.format_map(fields)

    def score(self, requests):
        prompts = [self.render(r) for r in requests]
        replies = self.backend.complete(prompts) if prompts else []
        out = []
        for req, reply in zip(requests, replies):
            self._count("requests")
            nan = [math.nan] * len(req.steps)
            if reply is None:
                self._count("call_failures")
                out.append(JudgeResult(step_scores=nan, parsed=False, text=""))
                continue
            try:
                res = self.parser(reply, req)
            except Exception as e:  # noqa: BLE001 - a reply the parser chokes on is a parse failure
                log.debug("judge parser failed: %s", e)
                res = JudgeResult(step_scores=nan, parsed=False)
            res.text = reply
            if not res.parsed:
                self._count("parse_failures")
            out.append(res)
        self._check_health(len(replies), sum(r is None for r in replies))
        return out

    def _check_health(self, calls: int, failed: int) -> None:
        if not calls:
            return
        self._all_failed_streak = self._all_failed_streak + 1 if failed == calls else 0
        why = getattr(self.backend, "last_error", "") or "no reason recorded"
        if self.max_failed_steps and self._all_failed_streak >= self.max_failed_steps:
            raise JudgeFailing(
                f"{self.backend.describe()}: every call failed in {self._all_failed_streak} judged batches in a "
                f"row ({calls} calls in the last one; last failure: {why}). Training would go on without the "
                f"judge's signal, so it stops here. Fix or restart the judge and resume from the last checkpoint; "
                f"judge.max_failed_steps=0 trains on regardless")
        rate = failed / calls
        if self.warn_failure_rate is not None and failed and rate > self.warn_failure_rate:
            self._bad_streak += 1
            if self._bad_streak % 10 == 1:
                log.warning("judge: %d of %d calls failed in this batch (%.0f%% > judge.warn_failure_rate=%.0f%%; "
                            "%d such batches in a row; last failure: %s); failed calls give no step scores",
                            failed, calls, 100 * rate, 100 * self.warn_failure_rate, self._bad_streak, why)
        else:
            self._bad_streak = 0

    def probe(self) -> None:
        self.backend.probe()

    def close(self) -> None:
        self.backend.close()


# ------------------------------------------------------------------------------------------------ parsers
_POSITIVE = {"correct", "right", "valid", "true", "yes", "good", "+", "1", "unmatched", "mismatched", "uncertain"}
_NEGATIVE = {"incorrect", "wrong", "invalid", "false", "no", "bad", "-", "0", "matched", "error"}
_LINE_RE = re.compile(r"step\s*(\d+)\s*[:.)\-]\s*\**\s*([A-Za-z+\-01]+)", re.IGNORECASE)


def parse_step_labels(reply: str, req: JudgeRequest) -> JudgeResult:
    """Lines ``Step k: correct|incorrect`` (1-based) -> scores 1/0; unlabelled steps NaN. Parsed iff at least
    one step of the request got a label."""
    n = len(req.steps)
    scores = [math.nan] * n
    for m in _LINE_RE.finditer(reply):
        k, word = int(m.group(1)) - 1, m.group(2).lower()
        if 0 <= k < n:
            if word in _NEGATIVE:
                scores[k] = 0.0
            elif word in _POSITIVE:
                scores[k] = 1.0
    return JudgeResult(step_scores=scores, parsed=any(not math.isnan(s) for s in scores))


_JSON_BLOCK = re.compile(r"\[[^\[\]]*\]", re.DOTALL)
_TP_LABELS = {"correct": "C", "incorrect": "I", "matched": "M", "unmatched": "U", "mismatched": "U",
              "uncertain": "U", "c": "C", "i": "I", "m": "M", "u": "U"}


def parse_json_labels(reply: str, req: JudgeRequest) -> JudgeResult:
    """The TP-GRPO judge schema: the last JSON list ``[{"step": k, "label": "correct"|"incorrect"|"matched"|
    "unmatched"}, ...]`` in the reply (1-based steps). Scores: correct/unmatched 1, incorrect/matched 0;
    ``labels`` holds C/I/M/U, ``None`` for a step the judge did not label (the algorithm fills its default).
    Not parsed: no JSON list, or no entry that names a step of the request with a known label."""
    n = len(req.steps)
    labels: list[str | None] = [None] * n
    for block in reversed(_JSON_BLOCK.findall(reply)):
        try:
            items = json.loads(block)
        except ValueError:
            continue
        if not isinstance(items, list):
            continue
        for it in items:
            if not isinstance(it, dict):
                continue
            try:
                k = int(it.get("step")) - 1
            except (TypeError, ValueError):
                continue
            lab = _TP_LABELS.get(str(it.get("label", "")).strip().lower())
            if lab is not None and 0 <= k < n:
                labels[k] = lab
        break
    ok = any(lab is not None for lab in labels)
    scores = [math.nan if lab is None else (1.0 if lab in ("C", "U") else 0.0) for lab in labels]
    return JudgeResult(step_scores=scores, parsed=ok, labels=labels if ok else None)  # type: ignore[arg-type]


_SCORE_RE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)


def parse_scalar_score(reply: str, req: JudgeRequest, scale: float = 10.0) -> JudgeResult:
    """The last ``Score: x`` (or ``Score: x/M``) in the reply -> ``final = x / M`` (``M`` default 10), which must
    lie in [0, 1]; steps get no score."""
    ms = _SCORE_RE.findall(reply)
    nan = [math.nan] * len(req.steps)
    if not ms:
        return JudgeResult(step_scores=nan, parsed=False)
    x, m = float(ms[-1][0]), float(ms[-1][1]) if ms[-1][1] else scale
    if m <= 0 or not 0 <= x <= m:
        return JudgeResult(step_scores=nan, parsed=False)
    return JudgeResult(step_scores=nan, final=x / m)


# ------------------------------------------------------------------------------------------------ templates
STEP_LABELS_TEMPLATE = (
    "You are a strict grader of step-by-step solutions. Judge each step on its own: is it correct given the "
    "question and the steps before it?\n\n"
    "Question:\n{question}\n\nSolution steps:\n{steps}\n\n"
    "Answer with exactly one line per step, `Step k: correct` or `Step k: incorrect`, for k = 1..{num_steps}."
)

# TP-GRPO Stage I (spec §2.3, prompt reconstructed): the judge does not re-solve the problem; it uses the
# intrinsic signals of the trace: self-reflections in a correct solution, answer matching in a wrong one.
TP_GRPO_TEMPLATE = {
    "system": (
        "You label the reasoning steps of a solution WITHOUT solving the problem yourself.\n"
        "If the final answer is CORRECT: (1) find every self-reflection or self-correction (e.g. 'wait', "
        "'I made a mistake', 'that was wrong'); (2) trace back which earlier steps each reflection says were "
        "wrong; (3) verify that interval step by step (a step that depends on a wrong step is also wrong). "
        "Label those steps \"incorrect\" and every other step \"correct\".\n"
        "If the final answer is WRONG: label \"matched\" every step whose result is adopted into (leads to) "
        "the wrong final answer, and \"unmatched\" every other step.\n"
        "Reply with a short analysis, then a JSON list on the last line: "
        "[{{\"step\": 1, \"label\": \"...\"}}, ...] covering steps 1..N."
    ),
    "user": "Question:\n{question}\n\nThe final answer is {verdict}.\n\nSteps:\n{steps}\n\nN = {num_steps}.",
}

SCORE_TEMPLATE = {
    "system": ("You rate the reasoning of a solution for logical consistency, coherence and quality (not for "
               "whether the final answer is right). End your reply with `Score: x/10`."),
    "user": "Question:\n{question}\n\nReasoning:\n{response}",
}

TEMPLATES: dict[str, tuple[str | Mapping[str, str], Parser]] = {
    "step_labels": (STEP_LABELS_TEMPLATE, parse_step_labels),
    "tp_grpo": (TP_GRPO_TEMPLATE, parse_json_labels),
    "score": (SCORE_TEMPLATE, parse_scalar_score),
}


# ------------------------------------------------------------------------------------------------ factory
def _resolve_callable(path: str) -> Callable:
    mod, _, name = path.rpartition(".")
    if not mod:
        raise ValueError(f"{path!r} is not a dotted path 'package.module.function'")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {path!r}: {e}") from e


def _prompt(template, parser) -> tuple[str | Mapping[str, str], Parser]:
    """The prompt and its reply parser: ``template`` a name in :data:`TEMPLATES` (its parser unless ``parser``
    is given) or a literal template (then ``parser`` is required); ``parser`` a TEMPLATES name, a dotted path to
    ``fn(reply, request) -> JudgeResult``, or the function itself (an algorithm's own)."""
    template = template or "step_labels"
    if isinstance(template, str) and template in TEMPLATES:
        t, p = TEMPLATES[template]
    elif parser is None:
        raise ConfigError(f"judge.template is a literal template, so judge.parser must name its parser "
                          f"(one of {list(TEMPLATES)} or a dotted path); named templates: {list(TEMPLATES)}")
    else:
        t, p = template, None
    if parser is not None:
        p = parser if callable(parser) else TEMPLATES[parser][1] if parser in TEMPLATES else _resolve_callable(parser)
    return t, p


def _backend_options(cls: type, opts: Mapping[str, Any] | None, key: str) -> dict:
    """``opts`` checked against ``cls``'s constructor: a misspelt option is a ConfigError naming it."""
    opts = dict(opts or {})
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}
    valid = list(params)
    for k in opts:
        if k not in valid:
            near = difflib.get_close_matches(k, valid, n=3)
            raise ConfigError(f"judge.{key}.{k} is not an option of the {key} judge backend"
                              f"{f' (did you mean {near}?)' if near else ''}; valid: {valid}")
    for n, p in params.items():
        if p.default is inspect.Parameter.empty and n not in opts:
            raise ConfigError(f"judge.{key}.{n} must be set (the {key} judge backend has no default for it)")
    return opts


def _prompted(backend: ChatBackend, template, parser, probe: bool, warn_failure_rate, max_failed_steps):
    t, p = _prompt(template, parser)
    judge = PromptedJudge(backend, t, p, warn_failure_rate=warn_failure_rate, max_failed_steps=max_failed_steps)
    if probe:
        judge.probe()
    return judge


def rule_judge(task=None, template=None, parser=None) -> RuleStepJudge:
    """``judge=rule``: the task's exact step checker (``task.score_steps``); no model, no network. An algorithm's
    prompt (``template``, ``parser``) does not apply to it."""
    return RuleStepJudge(task)


def hf_judge(hf: Mapping[str, Any] | None = None, template="step_labels", parser=None, probe: bool = True,
             warn_failure_rate: float | None = 0.25, max_failed_steps: int | None = 3, task=None) -> PromptedJudge:
    """``judge=hf``: a local causal LM (:class:`HFChatBackend`, options under ``judge.hf``) prompted with
    ``template``, its reply read by ``parser``; ``probe`` checks the backend at once."""
    return _prompted(HFChatBackend(**_backend_options(HFChatBackend, hf, "hf")), template, parser, probe,
                     warn_failure_rate, max_failed_steps)


def openai_judge(openai: Mapping[str, Any] | None = None, template="step_labels", parser=None, probe: bool = True,
                 warn_failure_rate: float | None = 0.25, max_failed_steps: int | None = 3,
                 task=None) -> PromptedJudge:
    """``judge=openai``: an OpenAI-compatible endpoint (:class:`OpenAIChatBackend`, options under
    ``judge.openai``); a dead URL or a model it does not serve fails at start-up when ``probe``."""
    return _prompted(OpenAIChatBackend(**_backend_options(OpenAIChatBackend, openai, "openai")), template, parser,
                     probe, warn_failure_rate, max_failed_steps)


def scripted_judge(scripted: Mapping[str, Any] | None = None, template="step_labels", parser=None, probe: bool = True,
                   warn_failure_rate: float | None = 0.25, max_failed_steps: int | None = 3,
                   task=None) -> PromptedJudge:
    """``judge=scripted``: a Python function ``fn(prompt) -> reply`` plays the judge model (``judge.scripted.fn``,
    a dotted path)."""
    opts = _backend_options(ScriptedBackend, scripted, "scripted")
    if not opts.get("fn"):
        raise ConfigError("judge.scripted.fn must be a dotted path to a function prompt -> reply")
    return _prompted(ScriptedBackend(opts["fn"]), template, parser, probe, warn_failure_rate, max_failed_steps)


#: the judge builders of ``conf/judge/*.yaml`` (``_target_: steprl.rewards.judges.<name>``)
BUILDERS = ("rule_judge", "hf_judge", "openai_judge", "scripted_judge")


def build_judge(cfg: Mapping[str, Any] | None, task=None, template=None, parser=None) -> StepJudge:
    """A judge from its config node (``conf/judge/*.yaml``), built with ``hydra.utils.instantiate`` like every
    other group: ``_target_`` names the builder (:data:`BUILDERS`, or any function with their keywords), the
    other keys are its arguments. The caller adds the ``task`` (the rule judge's step checker) and, for the
    generative backends, an algorithm's own prompt (``template`` and ``parser`` objects), which replace the
    config's. Any config mistake (no or an unknown ``_target_``, a misspelt key) is a :class:`ConfigError`
    naming the key."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    target = cfg.get("_target_")
    if not target:
        old = f" (`backend: {cfg['backend']}` is now `_target_: steprl.rewards.judges.{cfg['backend']}_judge`)" \
            if "backend" in cfg else ""
        raise ConfigError(f"judge._target_ is missing{old}: give judge=rule | hf | openai | scripted, or a judge "
                          f"config whose _target_ is one of steprl.rewards.judges.{{{', '.join(BUILDERS)}}}")
    try:
        fn = hydra.utils.get_method(target)
    except Exception as e:  # noqa: BLE001 - Hydra wraps import errors in its own exception types
        raise ConfigError(f"judge._target_={target}: cannot import it ({type(e).__name__}); the judges are "
                          f"steprl.rewards.judges.{{{', '.join(BUILDERS)}}}") from e
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [n for n in params if n not in ("task",)]
        for k in cfg:
            if not k.startswith("_") and k not in params:
                near = difflib.get_close_matches(k, valid, n=3)
                raise ConfigError(f"judge.{k} is not a key of judge {target}"
                                  f"{f' (did you mean {near}?)' if near else ''}; valid: {valid}")
    make = hydra.utils.instantiate(cfg, _partial_=True, _convert_="all")
    mine = {k: v for k, v in (("template", template), ("parser", parser)) if v is not None}
    return make(task=task, **mine)
