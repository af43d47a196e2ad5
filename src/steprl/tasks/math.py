"""Math word problems from files or the HF hub, graded with math-verify.

Supported row formats (keys auto-detected per row unless ``question_key`` / ``answer_key`` are given):

* MATH / MATH-500: ``problem``, ``answer``, ``solution`` (when ``answer`` is missing, the last ``\\boxed{}`` of
  ``solution`` is used).
* GSM8K: ``question``, ``answer`` = worked solution ending in ``#### <final answer>``. The reference answer is the
  text after the last ``####``; ``Sample.solution`` is the worked solution with the calculator annotations
  (``<<16-3-4=9>>``) removed, *still ending in* ``#### <answer>`` so that it is a complete SFT target;
  ``meta["rationale"]`` holds the part before ``####``.
* AIME 2024 / AMC 2023 (Qwen2.5-Math packaging): ``problem`` (== ``question``), ``answer`` (AIME: zero-padded
  strings such as ``"025"``; AMC: floats such as ``27.0``, stored as ``"27"``), ``solution`` for AIME only.

Files: ``.jsonl``, ``.jsonl.gz``, ``.json`` (a list of objects) and ``.parquet``; or ``hf_name`` (+ ``hf_config``,
``hf_split``) through ``datasets.load_dataset`` (imported only then).

Grading: the prediction is the content of the response's last ``\\boxed{...}`` (or ``\\fbox{...}``), or the text
after its last ``####`` (GSM8K style), whichever comes later in the response. Both it and the reference are
wrapped as ``\\boxed{...}`` and compared with ``math_verify.parse`` / ``math_verify.verify``; a trailing percent
sign is dropped from both first. ``timeout_s`` bounds the CPU time (not the wall time) of one grading with an
``ITIMER_PROF`` timer, so a verdict does not depend on machine load; math-verify's own wall-clock
``signal.alarm`` timeouts are disabled. The timer works in the main thread only (elsewhere the reward worker
pool's wall-clock kill is the only guard). A grading past its limit grades 0 and, inside the reward pipeline,
is counted in ``reward/timeouts`` (:class:`GradingTimeout`); nothing else raises.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from steprl.rewards.pool import ScoreTimeout, timeouts_reported
from steprl.rollout.types import Sample
from steprl.tasks.base import SampleListDataset, Task, read_jsonl_rows

log = logging.getLogger(__name__)

__all__ = [
    "MathTask",
    "GSM8KTask",
    "DEFAULT_PROMPT",
    "GSM8K_PROMPT",
    "grade_answer",
    "strip_percent",
    "GradingTimeout",
    "last_boxed",
    "extract_math_answer",
]

DEFAULT_PROMPT = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.\n"
GSM8K_PROMPT = '{question}\nLet\'s think step by step and output the final answer after "####".\n'

QUESTION_KEYS = ("problem", "question", "query", "prompt", "input", "instruction")
ANSWER_KEYS = ("answer", "final_answer", "expected_answer", "gt_answer", "ground_truth", "target", "label")
SOLUTION_KEYS = ("solution", "rationale", "reasoning", "explanation")
ID_KEYS = ("unique_id", "id", "uid", "idx", "task_id")
MAX_ANSWER_CHARS = 1000  # longer "answers" are not graded (0.0): keeps sympy off adversarial input
_CALC_RE = re.compile(r"<<[^<>]*>>")
_EOS_MARKERS = ("<eos>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>")


# ---------------------------------------------------------------------------------------------------------------
# answer extraction
# ---------------------------------------------------------------------------------------------------------------
def _boxed_at(text: str, start: int, cmd: str) -> str | None:
    j = start + len(cmd)
    n = len(text)
    while j < n and text[j] == " ":
        j += 1
    if j >= n:
        return None
    if text[j] != "{":  # "\boxed 5"
        m = re.match(r"[^\s$]+", text[j : j + MAX_ANSWER_CHARS + 1])
        return m.group(0) if m else None
    depth = 0
    for k in range(j, n):
        c = text[k]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k]
    return None  # unclosed (e.g. a truncated response)


def last_boxed(text: str) -> tuple[int, str] | None:
    """``(position, content)`` of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None."""
    best = None
    for cmd in ("\\boxed", "\\fbox"):
        k = text.rfind(cmd)
        if k >= 0 and (best is None or k > best[0]):
            best = (k, cmd)
    if best is None:
        return None
    content = _boxed_at(text, best[0], best[1])
    return None if content is None else (best[0], content)


def _last_hash_answer(text: str) -> tuple[int, str] | None:
    k = text.rfind("####")
    if k < 0:
        return None
    tail = text[k + 4 :].lstrip()
    tail = tail.split("\n", 1)[0].strip()
    changed = True
    while changed and tail:
        changed = False
        for marker in _EOS_MARKERS:
            if tail.endswith(marker):
                tail = tail[: -len(marker)].rstrip()
                changed = True
    tail = tail.strip().strip("$").rstrip(".").strip()
    return (k, tail) if tail else None


def extract_math_answer(response: str) -> str | None:
    """The later of the last ``\\boxed{}`` content and the last ``#### x`` answer in ``response``, or None."""
    cands = [c for c in (last_boxed(response), _last_hash_answer(response)) if c is not None]
    if not cands:
        return None
    return max(cands, key=lambda c: c[0])[1].strip() or None


# ---------------------------------------------------------------------------------------------------------------
# grading with math-verify
# ---------------------------------------------------------------------------------------------------------------
class GradingTimeout(ScoreTimeout):
    """Grading ran past its CPU-time limit (raised inside the reward pipeline, which counts it in
    ``reward/timeouts``; elsewhere such an answer grades False)."""


class _CpuLimit(BaseException):
    """Raised by the SIGPROF handler; a BaseException so math-verify's ``except Exception`` cannot swallow it."""


_TIMEOUT_WARNINGS_SILENCED = False
_NO_TIMEOUT_NOTED = False


def _silence_math_verify_timeout_warnings() -> None:
    # math-verify's own timeouts are signal.alarm based (wall clock, main thread only); we pass None to disable
    # them and bound the whole grading by CPU time instead: silence its one-off "Timeout is disabled" warnings
    global _TIMEOUT_WARNINGS_SILENCED
    if _TIMEOUT_WARNINGS_SILENCED:
        return
    _TIMEOUT_WARNINGS_SILENCED = True
    try:
        import math_verify.grader
        import math_verify.parser

        math_verify.parser.TIMEOUT_WARNING_SHOWN = True
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    except Exception:  # noqa: BLE001
        pass


@contextlib.contextmanager
def _cpu_time_limit(seconds: float | None):
    """Raise :class:`_CpuLimit` once this process has used ``seconds`` of CPU time (``ITIMER_PROF``: user +
    system time, so other work on the machine does not count). Yields a dict whose ``"fired"`` says whether the
    limit was reached (also when the code under it swallowed the exception). Only in the main thread (signals);
    elsewhere, or with ``seconds=None``, there is no limit (the reward pool's wall-clock kill still applies)."""
    global _NO_TIMEOUT_NOTED
    state = {"fired": False}
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        if not _NO_TIMEOUT_NOTED:
            _NO_TIMEOUT_NOTED = True
            log.info("math grading without a CPU-time limit (not in the main thread, or timeout_s=None)")
        yield state
        return

    def on_prof(signum, frame):
        state["fired"] = True
        raise _CpuLimit

    old_handler = signal.signal(signal.SIGPROF, on_prof)
    t0 = time.process_time()
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_PROF, float(seconds))
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old_handler)
        if outer_delay > 0:  # someone else's CPU timer was running: give it back what is left of it
            signal.setitimer(signal.ITIMER_PROF, max(1e-3, outer_delay - (time.process_time() - t0)), outer_interval)


def _wrap(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def _mv_parse(text: str) -> list:
    from math_verify import parse

    try:
        return parse(text, parsing_timeout=None)
    except Exception:  # noqa: BLE001
        log.debug("math-verify parse failed on %r", text[:200], exc_info=True)
        return []


@functools.lru_cache(maxsize=65536)
def _parse_gold_cached(gold: str) -> tuple:
    return tuple(_mv_parse(_wrap(gold)))


def _norm_str(s: str) -> str:
    return re.sub(r"\s+", "", s).strip("$").replace("\\!", "").replace("\\,", "")


# a trailing percent sign, with the spaces LaTeX writes before it: 50\%, 50 \%, 50\,\%, 50%, 50\text{\%}, 50 percent
_PERCENT_RE = re.compile(r"(?:\s|\\[,;:! ]|~)*(?:\\%|%|\\(?:text|mbox|mathrm)\{\s*\\?%\s*\}|\\?\s*percent)\s*$")


def strip_percent(answer: str) -> str:
    """``50\\%`` -> ``50``: a percentage is graded as its number (``\\boxed{50\\%}`` matches a reference ``50``)."""
    out = _PERCENT_RE.sub("", answer)
    return out if out.strip() else answer


def grade_answer(pred: str | None, gold: Any, timeout_s: float | None = 5) -> bool:
    """True iff the predicted final answer ``pred`` (e.g. a ``\\boxed{}`` content) equals the reference ``gold``.

    A trailing percent sign is dropped from both (``50\\%`` == ``50`` == ``50 \\%``). ``timeout_s`` bounds the
    CPU time of the whole grading (parsing both answers and comparing them), so a verdict does not depend on the
    load of the machine; ``None`` disables it. Past it the answer grades False, or, inside the reward pipeline,
    :class:`GradingTimeout` is raised and counted in ``reward/timeouts``. Nothing else raises.
    """
    try:
        if pred is None or gold is None:
            return False
        pred = str(pred).strip()
        gold = _answer_to_str(gold)
        if not pred or not gold or len(pred) > MAX_ANSWER_CHARS:
            return False
        pred, gold = strip_percent(pred), strip_percent(gold)
        _silence_math_verify_timeout_warnings()
        try:
            with _cpu_time_limit(timeout_s) as limit:
                ok = _grade(pred, gold)
        except _CpuLimit:
            limit = {"fired": True}
        if limit["fired"]:
            if timeouts_reported():
                raise GradingTimeout(f"math grading ran past {timeout_s:g}s of CPU time (task.timeout_s)")
            return False
        return ok
    except Exception:  # noqa: BLE001 - never raise
        log.debug("grade_answer failed", exc_info=True)
        return False
    except GradingTimeout:
        raise
    except BaseException as e:  # math-verify's TimeoutException derives from BaseException
        if type(e).__module__.startswith("math_verify"):
            return False
        raise


def _grade(pred: str, gold: str) -> bool:
    gold_parsed = _parse_gold_cached(gold)
    pred_parsed = _mv_parse(_wrap(pred))
    if not gold_parsed or not pred_parsed:
        return _norm_str(pred) == _norm_str(gold)
    from math_verify import verify

    try:
        return bool(verify(list(gold_parsed), pred_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001
        log.debug("math-verify verify failed", exc_info=True)
        return False


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------
def _answer_to_str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, str)):
        s = str(value).strip()
        return s or None
    try:  # numpy scalars and the like
        import numbers

        if isinstance(value, numbers.Integral):
            return str(int(value))
        if isinstance(value, numbers.Real):
            return _answer_to_str(float(value))
    except Exception:  # noqa: BLE001
        pass
    return None


def _iter_file_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(location, row)``, location being ``"<file>:<line>"`` (``"<file> row <n>"`` for parquet/json)."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot read parquet file: {e}") from e
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"{path} row {i}", row
        return
    if name.endswith(".json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: malformed JSON: {e}") from e
        if isinstance(data, Mapping):  # {"data": [...]} / {"rows": [...]}
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else data
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json file must hold a list of objects (use .jsonl for one per line)")
        for i, row in enumerate(data, start=1):
            yield f"{path} row {i}", row
        return
    if not (name.endswith(".jsonl") or name.endswith(".jsonl.gz") or name.endswith(".json.gz")):
        raise ValueError(f"{path}: unsupported file type; use .jsonl, .jsonl.gz, .json or .parquet")
    yield from read_jsonl_rows(path, "data file")


def _pick(row: Mapping, explicit: str | None, candidates: tuple[str, ...]) -> tuple[str | None, Any]:
    if explicit is not None:
        return (explicit, row[explicit]) if explicit in row else (None, None)
    for k in candidates:
        v = row.get(k)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return k, v
    return None, None


class MathTask(Task):
    """Math problems graded by final-answer equivalence (math-verify). No step checker (``score_steps`` -> None).

    Args:
        path: training rows (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.parquet``).
        hf_name, hf_split, hf_config: alternatively a hub dataset (``datasets.load_dataset(hf_name, hf_config,
            split=hf_split)``); ``hf_val_split`` optionally names a hub split to use as validation set.
        val_path: validation rows. Without it (and without ``hf_val_split``), ``num_val`` rows are held out of
            the training rows, chosen deterministically from ``seed`` (default ``min(200, 10% of rows)``). With it,
            ``num_val`` (if given) caps the validation set to a seeded subset. ``val_path`` alone (no ``path`` /
            ``hf_name``) makes an evaluation-only task whose ``train_dataset()`` raises.
        prompt_template: ``str.format`` template with a ``{question}`` field (double any literal braces).
        question_key, answer_key, solution_key: column names; auto-detected per row when None.
        seed: seed of the held-out split.
        name: task name (``Sample.source``, uid prefix).
        splitter: step splitter kind / spec (default paragraphs, ``"double_newline"``).
        timeout_s: CPU seconds per grading (main thread only; see the module docstring); None: no limit.
    """

    name = "math"
    has_step_checker = False

    def __init__(
        self,
        path: str | Path | None = None,
        hf_name: str | None = None,
        hf_split: str = "test",
        hf_config: str | None = None,
        val_path: str | Path | None = None,
        num_val: int | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        answer_key: str | None = None,
        question_key: str | None = None,
        seed: int = 0,
        name: str = "math",
        solution_key: str | None = None,
        hf_val_split: str | None = None,
        splitter: Any = "double_newline",
        timeout_s: float | None = 5,
    ):
        super().__init__(name=name, splitter=splitter)
        if path is not None and hf_name is not None:
            raise ValueError(f"{type(self).__name__}: give either path= or hf_name=, not both")
        if path is None and hf_name is None and val_path is None:
            raise ValueError(f"{type(self).__name__}: give path=, hf_name= or (for evaluation only) val_path=")
        if hf_val_split is not None and hf_name is None:
            raise ValueError(f"{type(self).__name__}: hf_val_split needs hf_name")
        if hf_val_split is not None and val_path is not None:
            raise ValueError(f"{type(self).__name__}: give either val_path= or hf_val_split=, not both")
        if "{question}" not in prompt_template:
            raise ValueError(f"prompt_template must contain a {{question}} field, got {prompt_template!r}")
        try:
            prompt_template.format(question="q")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"prompt_template {prompt_template!r} is not a valid str.format template with only {{question}} "
                f"(double literal braces: \\boxed{{{{}}}}): {e!r}"
            ) from e
        if num_val is not None and int(num_val) < 0:
            raise ValueError(f"num_val must be >= 0, got {num_val}")
        self.path = None if path is None else str(path)
        self.hf_name = hf_name
        self.hf_split = hf_split
        self.hf_config = hf_config
        self.hf_val_split = hf_val_split
        self.val_path = None if val_path is None else str(val_path)
        self.num_val = None if num_val is None else int(num_val)
        self.prompt_template = prompt_template
        self.answer_key = answer_key
        self.question_key = question_key
        self.solution_key = solution_key
        self.seed = seed
        self.timeout_s = timeout_s
        self._train: list[Sample] | None = None
        self._val: list[Sample] | None = None
        self._load()  # eagerly, so that bad paths / rows fail at construction

    # ----- pickling: the loaded rows stay behind (reloaded on demand); verify needs only the Sample -------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_train"] = None
        state["_val"] = None
        return state

    # ----- loading --------------------------------------------------------------------------------------------
    def _rows_from_file(self, path: str) -> list[tuple[str, Any]]:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{type(self).__name__}: data file not found: {p}")
        if not p.is_file():
            raise FileNotFoundError(f"{type(self).__name__}: not a file: {p}")
        return list(_iter_file_rows(p))

    def _rows_from_hub(self, split: str) -> list[tuple[str, Any]]:
        import datasets  # lazy: heavy import, and only needed for hub data

        ds = datasets.load_dataset(self.hf_name, self.hf_config, split=split)
        return [(f"{self.hf_name}[{split}] row {i}", row) for i, row in enumerate(ds, start=1)]

    def _to_sample(self, where: str, row: Mapping, index: int) -> Sample:
        keys = sorted(map(str, row.keys()))
        qk, question = _pick(row, self.question_key, QUESTION_KEYS)
        if qk is None or not isinstance(question, str) or not question.strip():
            tried = [self.question_key] if self.question_key else list(QUESTION_KEYS)
            raise ValueError(
                f"{where}: no usable question field (tried {tried}); keys found: {keys}. "
                f"Pass question_key= to name it."
            )
        sk, solution = _pick(row, self.solution_key, SOLUTION_KEYS)
        solution = solution if isinstance(solution, str) else None
        ak, raw_answer = _pick(row, self.answer_key, ANSWER_KEYS)
        meta: dict[str, Any] = {"row": index}
        answer: str | None = None
        if isinstance(raw_answer, str) and "####" in raw_answer:  # GSM8K style: worked solution + "#### x"
            rationale, _, final = raw_answer.rpartition("####")
            answer = final.strip() or None
            rationale = _CALC_RE.sub("", rationale).rstrip()
            meta["rationale"] = rationale
            if solution is None:
                solution = f"{rationale}\n#### {answer}" if rationale else f"#### {answer}"
        elif raw_answer is not None:
            answer = _answer_to_str(raw_answer)
        elif ak is None and self.answer_key is None and solution is not None:
            boxed = last_boxed(solution)  # MATH without an answer column
            answer = boxed[1].strip() if boxed else None
        if answer is None:
            tried = [self.answer_key] if self.answer_key else list(ANSWER_KEYS)
            raise ValueError(
                f"{where}: no usable answer field (tried {tried}"
                + ("" if self.answer_key else " and a \\boxed{} in the solution")
                + f"); keys found: {keys}. Pass answer_key= to name it."
            )
        uid = None
        for k in ID_KEYS:
            if k in row and row[k] is not None and not isinstance(row[k], (dict, list)):
                uid = f"{self.name}-{row[k]}"
                break
        for k, v in row.items():  # keep small scalar extras (subject, level, url, ...)
            if k not in (qk, ak, sk) and v != question and isinstance(v, (str, int, float, bool)) and len(str(v)) <= 200:
                meta.setdefault(str(k), v)
        return Sample(
            prompt=self.prompt_template.format(question=question.strip()),
            answer=answer,
            solution=solution,
            uid=uid or f"{self.name}-{index}",
            source=self.name,
            meta=meta,
        )

    def _samples(self, rows: list[tuple[str, Any]]) -> list[Sample]:
        for where, row in rows:  # .json lists and parquet rows (jsonl lines are checked as they are read)
            if not isinstance(row, Mapping):
                raise ValueError(f"{where}: expected a JSON object per row, got {type(row).__name__}")
        return [self._to_sample(where, row, i) for i, (where, row) in enumerate(rows)]

    def _load(self) -> None:
        train: list[Sample] = []
        if self.path is not None:
            train = self._samples(self._rows_from_file(self.path))
        elif self.hf_name is not None:
            train = self._samples(self._rows_from_hub(self.hf_split))
        has_train_source = self.path is not None or self.hf_name is not None
        if has_train_source and not train:
            raise ValueError(f"{self._source_name()}: no rows")
        if self.val_path is not None or self.hf_val_split is not None:
            if self.val_path is not None:
                val = self._samples(self._rows_from_file(self.val_path))
            else:
                val = self._samples(self._rows_from_hub(self.hf_val_split))
            if self.num_val is not None and self.num_val < len(val):
                keep = sorted(random.Random(f"{self.seed}-val-subset").sample(range(len(val)), self.num_val))
                val = [val[i] for i in keep]
        else:
            n = len(train)
            k = min(200, n // 10) if self.num_val is None else self.num_val
            if k >= n:
                raise ValueError(
                    f"{self._source_name()}: num_val={k} would hold out all {n} rows and leave none for "
                    f"training; lower num_val or pass val_path="
                )
            held = set(random.Random(f"{self.seed}-holdout").sample(range(n), k))
            val = [s for i, s in enumerate(train) if i in held]
            train = [s for i, s in enumerate(train) if i not in held]
        self._train, self._val = train, val

    def _source_name(self) -> str:
        return self.path if self.path is not None else f"{self.hf_name}[{self.hf_split}]"

    def _ensure_loaded(self) -> None:
        if self._train is None or self._val is None:
            self._load()

    def train_dataset(self) -> Dataset:
        if self.path is None and self.hf_name is None:
            raise ValueError(
                f"{type(self).__name__}(name={self.name!r}) is evaluation-only (only val_path= was given); "
                "pass path= or hf_name= for training data"
            )
        self._ensure_loaded()
        return SampleListDataset(self._train)

    def val_dataset(self) -> Dataset:
        self._ensure_loaded()
        return SampleListDataset(self._val)

    def eval_dataset(self) -> Dataset:
        """Every row of the task's file (or hub split) in file order, for evaluation and for grading saved
        predictions line by line; an evaluation-only task (``val_path`` alone) gives its validation rows."""
        if self.path is not None:
            return SampleListDataset(self._samples(self._rows_from_file(self.path)))
        if self.hf_name is not None:
            return SampleListDataset(self._samples(self._rows_from_hub(self.hf_split)))
        return self.val_dataset()

    # ----- scoring --------------------------------------------------------------------------------------------
    def _extract_answer(self, response: str) -> str | None:
        return extract_math_answer(response)

    def _verify(self, sample: Sample, response: str) -> float:
        pred = extract_math_answer(response)
        if pred is None:
            return 0.0
        return 1.0 if grade_answer(pred, sample.answer, self.timeout_s) else 0.0

    def __repr__(self) -> str:
        src = f"path={self.path!r}" if self.path else f"hf_name={self.hf_name!r}"
        return f"{type(self).__name__}(name={self.name!r}, {src}, val_path={self.val_path!r})"


class GSM8KTask(MathTask):
    """GSM8K preset: the prompt asks for the final answer after ``####``; steps are lines.

    Grading accepts ``#### x`` as well as ``\\boxed{x}`` (whichever comes last). Give ``path=`` (e.g.
    ``../shared/data/gsm8k_test.jsonl``) or ``hf_name="openai/gsm8k", hf_config="main", hf_split="train",
    hf_val_split="test"``.
    """

    name = "gsm8k"

    def __init__(
        self,
        path: str | Path | None = None,
        hf_name: str | None = None,
        hf_split: str = "train",
        hf_config: str | None = None,
        val_path: str | Path | None = None,
        num_val: int | None = None,
        prompt_template: str = GSM8K_PROMPT,
        answer_key: str | None = None,
        question_key: str | None = None,
        seed: int = 0,
        name: str = "gsm8k",
        solution_key: str | None = None,
        hf_val_split: str | None = None,
        splitter: Any = "newline",
        timeout_s: float | None = 5,
    ):
        if hf_name is not None and hf_config is None and hf_name.rstrip("/").endswith("gsm8k"):
            hf_config = "main"
        super().__init__(
            path=path,
            hf_name=hf_name,
            hf_split=hf_split,
            hf_config=hf_config,
            val_path=val_path,
            num_val=num_val,
            prompt_template=prompt_template,
            answer_key=answer_key,
            question_key=question_key,
            seed=seed,
            name=name,
            solution_key=solution_key,
            hf_val_split=hf_val_split,
            splitter=splitter,
            timeout_s=timeout_s,
        )
