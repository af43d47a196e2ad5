"""Task = dataset + prompt format + outcome verifier + step splitter (+ optional step checker).

Everything the RL loop needs to know about a problem family lives behind :class:`Task`:

* ``train_dataset()`` / ``val_dataset()`` return map-style ``torch.utils.data.Dataset`` objects whose items are
  :class:`~steprl.rollout.types.Sample` (``prompt`` already formatted for the model).
* ``verify(sample, response)`` scores the final answer of one response in ``[0, 1]``. It never raises: any
  exception inside a task's checker becomes ``0.0`` (logged at debug level).
* ``score_steps(sample, response)`` returns one score per step of ``task.splitter.split(response)``, or ``None``
  when the task has no step checker.
* ``extract_answer(response)`` pulls the final answer string out of a response (for maj@k voting / logging).

Subclasses implement the underscored hooks ``_verify``, ``_score_steps`` and ``_extract_answer``; the public
methods wrap them with the never-raise / clamping guarantees. Task objects are pickled into verifier worker
processes, so keep their state small (see ``__getstate__`` in the concrete tasks).
"""
from __future__ import annotations

import gzip
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from steprl.rollout.types import Sample

log = logging.getLogger(__name__)

__all__ = ["StepSplitter", "Task", "SampleListDataset", "make_splitter", "parse_json_object", "read_jsonl_rows"]


def parse_json_object(text: str, where: str, what: str = "line") -> dict:
    """``json.loads(text)``, which must give an object; errors say ``"<where>: <what> is not valid JSON (...)"`` or
    ``"... must be a JSON object, got <type>"`` (``where`` e.g. ``"<file>:<line>"``)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: {what} is not valid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: {what} must be a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl_rows(path: str | Path, what: str = "file") -> list[tuple[str, dict]]:
    """The rows of a JSON-lines file (``.jsonl``; gzip when the name ends in ``.gz``) as ``(location, object)``
    pairs, ``location`` being ``"<file>:<line>"`` for the caller's own messages. Blank lines are skipped.

    Errors name the file and line: ``FileNotFoundError`` for a missing file (``what`` says which, e.g.
    ``"predictions file"``), ``ValueError`` for a line that is not UTF-8, not JSON or not a JSON object, for an
    unreadable (e.g. corrupt gzip) file and for a file without rows.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    rows: list[tuple[str, dict]] = []
    try:
        with opener(p, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"{p}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{where}: not valid UTF-8 ({e})") from e
                if not line.strip():
                    continue
                rows.append((where, parse_json_object(line, where)))
    except (OSError, EOFError) as e:  # corrupt gzip
        raise ValueError(f"{p}: cannot read file: {e}") from e
    if not rows:
        raise ValueError(f"{p}: no rows (the file is empty)")
    return rows


class StepSplitter:
    """Maps a response text to the character spans ``(start, end)`` of its reasoning steps.

    Kinds:

    * ``"newline"``: every line that contains non-whitespace text is one step.
    * ``"double_newline"``: paragraphs; steps are separated by one or more blank (whitespace-only) lines.
    * ``"regex"``: ``pattern`` matches the separators between steps. The text a separator match consumes
      ends the step before it (like a newline or a ``" ки"`` step tag does); to split *before* a header such as
      ``"Step 2:"`` use a look-ahead, ``pattern=r"(?=Step \\d+:)"``. Zero-width matches are allowed.

    Spans are trimmed of surrounding whitespace, never empty, strictly increasing and non-overlapping, and
    together they cover every non-whitespace character of the text (separator text included). Whitespace
    between steps belongs to no step unless ``split(text, tile=True)`` is used, which stretches the spans to
    tile ``[0, len(text))`` exactly (each span runs to the start of the next one; the first starts at 0).
    "Whitespace" means ``str.isspace`` (Unicode-aware).
    """

    KINDS = ("newline", "double_newline", "regex")

    _BLANK_LINE = re.compile(r"\n[^\S\n]*\n(?:[^\S\n]*\n)*")

    def __init__(self, kind: str = "newline", pattern: str | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"unknown StepSplitter kind {kind!r}; valid kinds: {', '.join(self.KINDS)}")
        if kind == "regex":
            if not pattern:
                raise ValueError("StepSplitter(kind='regex') needs a non-empty `pattern` that matches step separators")
            try:
                self._regex = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"StepSplitter: invalid regex pattern {pattern!r}: {e}") from e
        elif pattern is not None:
            raise ValueError(f"StepSplitter(kind={kind!r}) takes no `pattern` (only kind='regex' does)")
        else:
            self._regex = re.compile(r"\n") if kind == "newline" else self._BLANK_LINE
        self.kind = kind
        self.pattern = pattern

    def __repr__(self) -> str:
        extra = f", pattern={self.pattern!r}" if self.pattern is not None else ""
        return f"StepSplitter(kind={self.kind!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepSplitter) and (self.kind, self.pattern) == (other.kind, other.pattern)

    def __hash__(self) -> int:
        return hash((self.kind, self.pattern))

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "pattern": self.pattern}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["kind"], state["pattern"])

    def split(self, text: str, tile: bool = False) -> list[tuple[int, int]]:
        """Character spans of the steps of ``text`` (see the class docstring)."""
        if not isinstance(text, str):
            raise TypeError(f"StepSplitter.split expects str, got {type(text).__name__}")
        # Segment boundaries: each separator match ends the segment that precedes it.
        cuts: list[int] = []
        for m in self._regex.finditer(text):
            # regex: separator text stays with the step it terminates; the built-in separators are pure
            # whitespace, so where inside them we cut does not matter.
            cut = m.end() if self.kind == "regex" else m.start()
            if 0 < cut < len(text) and (not cuts or cut > cuts[-1]):
                cuts.append(cut)
        spans: list[tuple[int, int]] = []
        start = 0
        for cut in [*cuts, len(text)]:
            s, e = _trim(text, start, cut)
            if s < e:
                spans.append((s, e))
            start = cut
        if tile and spans:
            tiled = []
            for k, (s, e) in enumerate(spans):
                s2 = 0 if k == 0 else s
                e2 = spans[k + 1][0] if k + 1 < len(spans) else len(text)
                tiled.append((s2, e2))
            spans = tiled
        return spans

    def split_text(self, text: str) -> list[str]:
        """The step strings themselves (``[text[s:e] for s, e in split(text)]``)."""
        return [text[s:e] for s, e in self.split(text)]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def make_splitter(spec: StepSplitter | str | Mapping[str, Any] | None, default: str = "newline") -> StepSplitter:
    """Build a splitter from a ``StepSplitter``, a kind name, or a ``{"kind": ..., "pattern": ...}`` mapping."""
    if spec is None:
        return StepSplitter(default)
    if isinstance(spec, StepSplitter):
        return spec
    if isinstance(spec, str):
        return StepSplitter(spec)
    if isinstance(spec, Mapping):
        return StepSplitter(**{k: spec[k] for k in spec})
    raise TypeError(f"cannot build a StepSplitter from {type(spec).__name__}: {spec!r}")


class SampleListDataset(Dataset):
    """A map-style dataset over an in-memory list of :class:`Sample`."""

    def __init__(self, samples: Sequence[Sample]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


class Task:
    """Base class of all tasks. See the module docstring for the contract.

    Attributes:
        name: short identifier (used as ``Sample.source`` and in metric names).
        splitter: the :class:`StepSplitter` that defines the steps ``score_steps`` scores and that the rollout
            code uses to build ``step_ids``.
    """

    name: str = "task"

    def __init__(self, name: str | None = None, splitter: StepSplitter | str | Mapping[str, Any] | None = None):
        if name is not None:
            self.name = name
        self.splitter = make_splitter(splitter)

    # ----- data ---------------------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        raise NotImplementedError(f"{type(self).__name__}.train_dataset")

    def val_dataset(self) -> Dataset:
        raise NotImplementedError(f"{type(self).__name__}.val_dataset")

    # ----- scoring (public, never raise) --------------------------------------------------------------------
    def verify(self, sample: Sample, response: str) -> float:
        """Outcome score of ``response`` in ``[0, 1]``; ``0.0`` on anything unparsable or on any internal error."""
        if type(self)._verify is Task._verify:
            raise NotImplementedError(f"{type(self).__name__} must implement _verify")
        try:
            if not isinstance(response, str):
                return 0.0
            score = float(self._verify(sample, response))
        except Exception:  # noqa: BLE001 - the contract is "never raise"
            log.debug("%s.verify failed; scoring 0", type(self).__name__, exc_info=True)
            return 0.0
        except BaseException as e:
            if _is_math_verify_timeout(e):
                return 0.0
            raise  # KeyboardInterrupt, SystemExit, a worker pool's own timeout exception
        return _clamp01(score)

    def score_steps(self, sample: Sample, response: str) -> list[float] | None:
        """One score in ``[0, 1]`` per span of ``self.splitter.split(response)``, or ``None`` without a step
        checker. An internal error gives all-zero scores (still one per step)."""
        if not self.has_step_checker:
            return None
        if type(self)._score_steps is Task._score_steps:
            raise NotImplementedError(
                f"{type(self).__name__} sets has_step_checker but does not implement _score_steps"
            )
        if not isinstance(response, str):
            return []
        try:
            n = len(self.splitter.split(response))
        except Exception:  # noqa: BLE001
            return []
        try:
            scores = self._score_steps(sample, response)
            scores = [_clamp01(float(s)) for s in scores]
        except Exception:  # noqa: BLE001
            log.debug("%s.score_steps failed; scoring 0", type(self).__name__, exc_info=True)
            return [0.0] * n
        if len(scores) != n:
            log.debug("%s._score_steps returned %d scores for %d steps", type(self).__name__, len(scores), n)
            scores = (scores + [0.0] * n)[:n]
        return scores

    def extract_answer(self, response: str) -> str | None:
        """The final answer written in ``response`` (normalised by the task), or ``None``. Never raises."""
        try:
            if not isinstance(response, str):
                return None
            return self._extract_answer(response)
        except Exception:  # noqa: BLE001
            log.debug("%s.extract_answer failed", type(self).__name__, exc_info=True)
            return None

    # ----- hooks for subclasses -----------------------------------------------------------------------------
    has_step_checker: bool = False

    def _verify(self, sample: Sample, response: str) -> float:
        raise NotImplementedError(f"{type(self).__name__}._verify")

    def _score_steps(self, sample: Sample, response: str) -> list[float]:
        raise NotImplementedError(f"{type(self).__name__}._score_steps")

    def _extract_answer(self, response: str) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, splitter={self.splitter!r})"


def _is_math_verify_timeout(e: BaseException) -> bool:
    return type(e).__module__.startswith("math_verify")


def _clamp01(x: float) -> float:
    if math.isnan(x):
        return 0.0
    return min(1.0, max(0.0, x))
