"""Synthetic multi-step integer arithmetic with worked solutions and an exact step checker.

Text formats (kept short and regular so a character-level tiny model can learn them)::

    prompt    "3+5*2=\\n"                                  expression, "=", newline
    solution  "3+5*2=3+10\\n3+10=13\\n#### 13"             one reduction per line, then "#### <answer>"
    answer    "13"

Each solution line is ``<current expression>=<the expression with exactly one operation reduced>``, following
standard precedence: the leftmost ``*`` first, then the leftmost ``+``/``-`` (left to right). Numbers are
non-negative except that the *first* number of an intermediate expression may be negative
(``"2-5+1=-3+1\\n-3+1=-2\\n#### -2"``). There are no spaces and no parentheses.

Difficulty knobs of :class:`ArithTask`:

* ``min_operand`` / ``max_operand``: operand range (inclusive, non-negative). Larger operands -> longer numbers
  and harder digit-level arithmetic.
* ``num_terms``: number of operands, an int or an inclusive ``[lo, hi]`` range sampled uniformly per problem.
  A problem with ``n`` terms needs ``n - 1`` reduction steps.
* ``operators``: the operators that may appear, a subset of ``"+-*"``. ``-`` introduces negative intermediate
  values, ``*`` introduces precedence (the model must pick which operation to reduce).

The ground-truth process signal (``score_steps``, newline steps): a step ``lhs=rhs`` scores 1 iff ``lhs`` is the
expected current expression (the prompt's expression for the first step, the previous step's ``rhs`` after
that, even if that step was wrong, so each step is judged on its own) and ``rhs`` is ``lhs`` with one adjacent
``a op b`` replaced by its result, the value of the whole expression unchanged (which implies exactly one
operator fewer). Reducing a different operation than the canonical one is accepted when it keeps the value
(``2+3+4=2+7``); a reduction that breaks precedence is not (``3+5*2=8*2``), and neither is a rewrite that keeps
the value but is not a single reduction (``3+5*2=11+2``). The ``#### x`` line scores 1 iff ``x`` equals the
value of the current expression. Unparsable lines, and any line after the ``####`` line, score 0.

Where a chain first went wrong (:meth:`ArithTask.first_error`): the index of the first step that scores 0, or the
number of steps when every step is right but the response stops before a ``####`` line (a cut-off chain's first
missing step), or ``None`` for a fully correct chain. With ``step_scores="prefix"`` the step scores themselves
carry it: a step scores 1 iff it and every step before it are right (1 before the first error, 0 from there on),
the per-step signal of a verifier that follows the reference chain; the default ``"local"`` judges each step
on its own as above.

Long chains (``task=arith_long``: 2-10 terms, lengths mixed): with a per-step accuracy ``p`` a chain of ``n``
terms is right with probability about ``p ** n`` (``n - 1`` reductions and the answer line), so a model that is
right on most steps is still wrong on most long chains. ``length_in_source=true`` names each sample's source
``"<name>_<n>"`` (``n`` terms), so validation logs ``val/acc/<name>_<n>`` per length.
"""
from __future__ import annotations

import logging
import numbers
import random
import re
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from steprl.rollout.types import Sample
from steprl.tasks.base import StepSplitter, Task

log = logging.getLogger(__name__)

__all__ = [
    "ArithTask",
    "evaluate_expression",
    "reduce_once",
    "worked_solution",
    "is_valid_reduction",
    "parse_expression",
    "STEP_SCORES",
]

STEP_SCORES = ("local", "prefix")

OPERATORS = "+-*"
MAX_DIGITS = 40  # longer numbers are rejected as unparsable (keeps checking cheap on adversarial text)
MAX_LINE_CHARS = 8192
_EXPR_RE = re.compile(r"(-?[0-9]+)((?:[-+*][0-9]+)*)")
_TAIL_RE = re.compile(r"([-+*])([0-9]+)")
_INT_RE = re.compile(r"-?[0-9]{1,%d}" % MAX_DIGITS)
_EOS_MARKERS = ("<eos>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>")

Tokens = list  # [n0, op1, n1, op2, n2, ...]: ints at even positions, operator chars at odd positions


# ---------------------------------------------------------------------------------------------------------------
# expression helpers
# ---------------------------------------------------------------------------------------------------------------
def parse_expression(expr: str) -> Tokens:
    """``"3+5*2"`` -> ``[3, "+", 5, "*", 2]``. Spaces are ignored; only the first number may carry a minus.

    Raises ``ValueError`` on anything else (empty text, parentheses, ``"3+-2"``, over-long numbers, ...).
    """
    if not isinstance(expr, str):
        raise ValueError(f"expression must be a string, got {type(expr).__name__}")
    if len(expr) > MAX_LINE_CHARS:
        raise ValueError("expression too long")
    s = expr.replace(" ", "").replace("\t", "")
    m = _EXPR_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"not an arithmetic expression: {expr[:80]!r}")
    first = m.group(1)
    if len(first.lstrip("-")) > MAX_DIGITS:
        raise ValueError("number too long")
    toks: Tokens = [int(first)]
    for op, digits in _TAIL_RE.findall(m.group(2)):
        if len(digits) > MAX_DIGITS:
            raise ValueError("number too long")
        toks.append(op)
        toks.append(int(digits))
    return toks


def format_expression(toks: Tokens) -> str:
    return "".join(str(t) for t in toks)


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}")


def _evaluate_tokens(toks: Tokens) -> int:
    # collapse * runs into terms, then fold +/- left to right
    terms = [toks[0]]
    addops: list[str] = []
    for k in range(1, len(toks), 2):
        op, n = toks[k], toks[k + 1]
        if op == "*":
            terms[-1] = terms[-1] * n
        else:
            addops.append(op)
            terms.append(n)
    total = terms[0]
    for op, v in zip(addops, terms[1:]):
        total = total + v if op == "+" else total - v
    return total


def evaluate_expression(expr: str) -> int:
    """Value of an expression with standard precedence (``*`` before ``+``/``-``, left to right)."""
    return _evaluate_tokens(parse_expression(expr))


def _merge(toks: Tokens, m: int) -> Tokens:
    """Reduce the operation between number ``m`` and number ``m + 1``."""
    i = 2 * m
    return toks[:i] + [_apply(toks[i], toks[i + 1], toks[i + 2])] + toks[i + 3 :]


def _canonical_position(toks: Tokens) -> int:
    ops = toks[1::2]
    return ops.index("*") if "*" in ops else 0


def _reduce_tokens(toks: Tokens) -> Tokens:
    if len(toks) < 3:
        raise ValueError("nothing to reduce: the expression is a single number")
    return _merge(toks, _canonical_position(toks))


def reduce_once(expr: str) -> str:
    """Reduce exactly one operation: the leftmost ``*`` if any, else the leftmost ``+``/``-``.

    ``reduce_once("3+5*2") == "3+10"``, ``reduce_once("2-5+1") == "-3+1"``. Raises ``ValueError`` on a single number.
    """
    return format_expression(_reduce_tokens(parse_expression(expr)))


def worked_solution(expr: str) -> str:
    """The full worked solution text for ``expr`` (see the module docstring), without a trailing newline."""
    toks = parse_expression(expr)
    lines = []
    while len(toks) > 1:
        nxt = _reduce_tokens(toks)
        lines.append(f"{format_expression(toks)}={format_expression(nxt)}")
        toks = nxt
    lines.append(f"#### {toks[0]}")
    return "\n".join(lines)


def _is_valid_reduction_tokens(lt: Tokens, rt: Tokens) -> bool:
    L = len(lt)
    if len(rt) != L - 2 or L < 3:
        return False
    # rhs must equal lt[:2m] + [lt[2m] op lt[2m+2]] + lt[2m+3:] for some m; bound m by the common prefix/suffix.
    P = 0
    while P < L - 2 and lt[P] == rt[P]:
        P += 1
    S = 0
    while S < L - 2 and lt[L - 1 - S] == rt[L - 3 - S]:
        S += 1
    n_ops = L // 2
    lo = max(0, -(-(L - 3 - S) // 2))
    hi = min(n_ops - 1, P // 2)
    for m in range(lo, hi + 1):
        i = 2 * m
        # for m in [lo, hi], lt[:i] == rt[:i] and lt[i + 3:] == rt[i + 1:] hold by construction of P and S
        if rt[i] == _apply(lt[i], lt[i + 1], lt[i + 2]):
            return _evaluate_tokens(lt) == _evaluate_tokens(rt)
    return False


def is_valid_reduction(lhs: str, rhs: str) -> bool:
    """True iff ``rhs`` is ``lhs`` with one adjacent ``a op b`` replaced by its result and the same value.

    Unparsable input gives False (never raises).
    """
    try:
        return _is_valid_reduction_tokens(parse_expression(lhs), parse_expression(rhs))
    except (ValueError, TypeError):
        return False


def _strip_eos(text: str) -> str:
    text = text.strip()
    changed = True
    while changed and text:
        changed = False
        for marker in _EOS_MARKERS:
            if text.endswith(marker):
                text = text[: -len(marker)].rstrip()
                changed = True
    return text


def _parse_int(text: str) -> int | None:
    text = _strip_eos(text)
    if _INT_RE.fullmatch(text) is None:
        return None
    return int(text)


# ---------------------------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------------------------
class _ArithDataset(Dataset):
    """Lazily generated split: ``ds[i]`` is computed from ``(seed, split, i)`` alone (O(1), process-independent)."""

    def __init__(self, task: ArithTask, split: str, size: int):
        self.task = task
        self.split = split
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Sample:
        i = int(i)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for {self.split} split of size {self.size}")
        return self.task.make_sample(self.split, i)


class ArithTask(Task):
    """Multi-step integer arithmetic (see the module docstring for formats, knobs and the step checker).

    Args:
        min_operand, max_operand: inclusive operand range, ``0 <= min_operand <= max_operand``.
        num_terms: operands per problem, an int ``>= 1`` or an inclusive ``[lo, hi]`` range.
        operators: which of ``"+-*"`` may appear (sampled uniformly per operator slot).
        num_train: length of the training split (problems may repeat; never a validation problem).
        num_val: number of validation problems, all distinct, none ever generated for training.
        seed: everything is a pure function of ``seed`` and the item index.
        name: task name (``Sample.source``).
        step_scores: ``"local"`` (each step judged on its own) or ``"prefix"`` (a step scores 1 iff every step up
            to it is right); see the module docstring.
        length_in_source: ``Sample.source`` is ``"<name>_<num_terms>"`` (per-length validation metrics).

    Raises:
        ValueError: invalid knobs, or a problem space too small for ``num_val`` distinct validation problems
            (plus at least one left for training when ``num_train > 0``).
    """

    name = "arith"
    has_step_checker = True

    def __init__(
        self,
        min_operand: int = 0,
        max_operand: int = 9,
        num_terms: int | Sequence[int] = 3,
        operators: str = "+-",
        num_train: int = 100000,
        num_val: int = 256,
        seed: int = 0,
        name: str = "arith",
        step_scores: str = "local",
        length_in_source: bool = False,
    ):
        super().__init__(name=name, splitter=StepSplitter("newline"))
        if step_scores not in STEP_SCORES:
            raise ValueError(f"ArithTask step_scores must be one of {list(STEP_SCORES)}, got {step_scores!r}")
        self.step_scores = step_scores
        self.length_in_source = bool(length_in_source)
        self.min_operand = int(min_operand)
        self.max_operand = int(max_operand)
        if self.min_operand < 0 or self.max_operand < self.min_operand:
            raise ValueError(
                f"ArithTask needs 0 <= min_operand <= max_operand, got min_operand={min_operand}, "
                f"max_operand={max_operand}"
            )
        if isinstance(num_terms, numbers.Integral):
            lo = hi = int(num_terms)
        else:
            try:
                lo, hi = (int(x) for x in num_terms)  # list, tuple, omegaconf ListConfig
            except (TypeError, ValueError) as e:
                raise ValueError(f"ArithTask num_terms must be an int or a [lo, hi] pair, got {num_terms!r}") from e
        if lo < 1 or hi < lo:
            raise ValueError(f"ArithTask num_terms must satisfy 1 <= lo <= hi, got {num_terms!r}")
        self.num_terms = (lo, hi)
        if not isinstance(operators, str) or not operators or any(c not in OPERATORS for c in operators):
            raise ValueError(f"ArithTask operators must be a non-empty subset of {OPERATORS!r}, got {operators!r}")
        self.operators = "".join(dict.fromkeys(operators))  # de-duplicated, order kept
        self.num_train = int(num_train)
        self.num_val = int(num_val)
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError(f"num_train and num_val must be >= 0, got {num_train}, {num_val}")
        self.seed = seed
        space = self.problem_space_size()
        need = self.num_val + (1 if self.num_train > 0 else 0)
        if space < need:
            raise ValueError(
                f"ArithTask problem space too small: operands {self.min_operand}..{self.max_operand}, "
                f"num_terms {lo}..{hi}, operators {self.operators!r} give only {space} distinct problems, but "
                f"num_val={self.num_val} distinct validation problems"
                + (" plus at least one training problem" if self.num_train > 0 else "")
                + " are needed; widen the operand range / terms / operators or lower num_val"
            )
        self._val_cache: tuple[list[str], frozenset[str]] | None = None

    # ----- pickling: drop the (recomputable) validation cache -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_val_cache"] = None
        return state

    # ----- generation -----------------------------------------------------------------------------------------
    def problem_space_size(self) -> int:
        """Number of distinct expressions the knobs allow."""
        v = self.max_operand - self.min_operand + 1
        o = len(self.operators)
        lo, hi = self.num_terms
        return sum(v**n * o ** (n - 1) for n in range(lo, hi + 1))

    def _draw(self, rng: random.Random) -> str:
        n = rng.randint(*self.num_terms)
        parts = [str(rng.randint(self.min_operand, self.max_operand))]
        for _ in range(n - 1):
            parts.append(rng.choice(self.operators))
            parts.append(str(rng.randint(self.min_operand, self.max_operand)))
        return "".join(parts)

    def _val(self) -> tuple[list[str], frozenset[str]]:
        if self._val_cache is None:
            exprs: list[str] = []
            seen: set[str] = set()
            for i in range(self.num_val):
                rng = random.Random(f"{self.seed}-val-{i}")
                for _ in range(10_000_000):
                    expr = self._draw(rng)
                    if expr not in seen:
                        break
                else:  # pragma: no cover - only in absurdly tight problem spaces
                    raise RuntimeError("ArithTask: could not draw distinct validation problems")
                seen.add(expr)
                exprs.append(expr)
            self._val_cache = (exprs, frozenset(seen))
        return self._val_cache

    def expression(self, split: str, i: int) -> str:
        """The expression of item ``i`` of ``split`` (``"train"`` or ``"val"``)."""
        if split == "val":
            return self._val()[0][i]
        if split != "train":
            raise ValueError(f"unknown split {split!r}; use 'train' or 'val'")
        held_out = self._val()[1]
        rng = random.Random(f"{self.seed}-train-{i}")
        for _ in range(10_000_000):
            expr = self._draw(rng)
            if expr not in held_out:
                return expr
        raise RuntimeError("ArithTask: could not draw a non-validation training problem")  # pragma: no cover

    def make_sample(self, split: str, i: int) -> Sample:
        expr = self.expression(split, i)
        toks = parse_expression(expr)
        n_terms = (len(toks) + 1) // 2
        return Sample(
            prompt=f"{expr}=\n",
            answer=str(_evaluate_tokens(toks)),
            solution=worked_solution(expr),
            uid=f"{self.name}-{self.seed}-{split}-{i}",
            source=f"{self.name}_{n_terms}" if self.length_in_source else self.name,
            meta={"expression": expr, "split": split, "index": i, "num_terms": n_terms},
        )

    def train_dataset(self) -> Dataset:
        return _ArithDataset(self, "train", self.num_train)

    def val_dataset(self) -> Dataset:
        return _ArithDataset(self, "val", self.num_val)

    # ----- scoring --------------------------------------------------------------------------------------------
    @staticmethod
    def _expression_of(sample: Sample) -> str:
        expr = (sample.meta or {}).get("expression")
        if expr is None:
            expr = sample.prompt.strip()
            if expr.endswith("="):
                expr = expr[:-1]
        return expr

    def _expected_answer(self, sample: Sample) -> int:
        if sample.answer is not None:
            return int(str(sample.answer).strip())
        return evaluate_expression(self._expression_of(sample))

    def _extract_answer(self, response: str) -> str | None:
        k = response.rfind("####")
        if k < 0:
            return None
        value = _parse_int(response[k + 4 :])
        return None if value is None else str(value)

    def _verify(self, sample: Sample, response: str) -> float:
        got = self._extract_answer(response)
        if got is None:
            return 0.0
        return 1.0 if int(got) == self._expected_answer(sample) else 0.0

    def _score_steps(self, sample: Sample, response: str) -> list[float]:
        scores, _ = self._check_steps(sample, response)
        if self.step_scores == "prefix":
            k = scores.index(0.0) if 0.0 in scores else len(scores)
            scores = [1.0] * k + [0.0] * (len(scores) - k)
        return scores

    def _check_steps(self, sample: Sample, response: str) -> tuple[list[float], bool]:
        """Local step scores (each step judged on its own) and whether a ``####`` line was reached."""
        current: Tokens | None = parse_expression(self._expression_of(sample))
        done = False
        scores = []
        for s, e in self.splitter.split(response):
            ok = True
            for line in response[s:e].split("\n"):
                line = line.strip()
                if not line:
                    continue
                line_ok, current, done = self._check_line(line, current, done)
                ok = ok and line_ok
            scores.append(1.0 if ok else 0.0)
        return scores, done

    def first_error(self, sample: Sample, response: str) -> int | None:
        """Where the chain first went wrong: the index (into ``splitter.split(response)``) of the first wrong step;
        the number of steps when all are right but no ``####`` line was reached (the first missing step);
        ``None`` when every step and the answer line are right. Never raises: an unusable ``sample`` or a
        non-string response gives 0."""
        try:
            scores, done = self._check_steps(sample, response)
        except Exception:  # noqa: BLE001 - same never-raise contract as score_steps
            log.debug("ArithTask.first_error failed; reporting step 0", exc_info=True)
            return 0
        if 0.0 in scores:
            return scores.index(0.0)
        return None if done else len(scores)

    @staticmethod
    def _check_line(line: str, current: Tokens | None, done: bool) -> tuple[bool, Tokens | None, bool]:
        if done or len(line) > MAX_LINE_CHARS:
            return False, current, done
        if line.startswith("####"):
            value = _parse_int(line[4:])
            ok = value is not None and current is not None and value == _evaluate_tokens(current)
            return ok, current, True
        if line.count("=") != 1:
            return False, current, done
        lhs_text, rhs_text = line.split("=")
        try:
            lhs = parse_expression(lhs_text)
            rhs = parse_expression(rhs_text)
        except ValueError:
            return False, current, done
        ok = lhs == current and _is_valid_reduction_tokens(lhs, rhs)
        return ok, rhs, done

    def __repr__(self) -> str:
        return (
            f"ArithTask(min_operand={self.min_operand}, max_operand={self.max_operand}, "
            f"num_terms={list(self.num_terms)}, operators={self.operators!r}, num_train={self.num_train}, "
            f"num_val={self.num_val}, seed={self.seed!r}, step_scores={self.step_scores!r}, "
            f"length_in_source={self.length_in_source})"
        )
