"""Programming problems with unit tests; the reward is the fraction of tests the model's program passes.

The program runs only in the sandbox (:mod:`steprl.rewards.sandbox`), one sandbox per response, as two processes:
the judge (:data:`JUDGE`, trusted) runs the tests, each with its own time budget, and reports each test's pass /
fail as soon as it is known (a run killed half-way keeps the tests it passed); the program runs in a process of
its own (:data:`RUNNER`), which the judge calls over a pipe and restarts after a test that timed out. Answers
come back as plain builtin values rebuilt by the judge, so neither the verdicts nor the comparisons are within
the program's reach. Anything that goes wrong (no code in the response, a syntax error, a crash, a timeout, a
memory or output limit) scores what was passed before it, usually 0; :meth:`CodeTask.verify` never raises.

Row formats (one JSON object per line in ``.jsonl`` / ``.jsonl.gz`` / ``.json`` / ``.parquet``, auto-detected):

* **HumanEval**: ``task_id``, ``prompt`` (signature + docstring), ``entry_point``, ``canonical_solution``, ``test``
  (a ``check(candidate)`` function). The program is ``prompt + completion`` (or ``prompt`` followed by a
  complete function the response defines); each top-level ``assert`` of ``check`` is one test.
* **MBPP**: ``text`` / ``prompt``, ``test_list`` (assert strings), optional ``test_setup_code``, ``code``.
* **APPS / TACO**: ``question``, ``input_output`` (JSON: ``inputs``, ``outputs`` and, for call-based problems,
  ``fn_name``), optional ``starter_code``, ``solutions``. Standard-input problems run the program once per test
  with the input on stdin and compare stdout (whitespace-insensitive, then token-wise with a float tolerance);
  call-based ones call ``fn_name`` (or ``Solution().fn_name``) with the listed arguments.
* **Native / LeetCode-style**: ``prompt``, ``tests`` and optional ``entry_point`` and ``solution``. ``tests`` is
  a list of assert strings (one test each), a string of test code (top-level asserts, or a ``check(candidate)``
  function when ``entry_point`` is given), or a list of ``{"input": ..., "output": ...}`` pairs: with
  ``entry_point`` the input is the argument list (or a dict of keyword arguments) and the output the expected
  return value; without it, input and output are stdin / stdout text.

Code extraction from a response: the last fenced block (```python / ```py / ```), preferring one that defines
the entry point; an unclosed fence (a truncated response) counts up to the end; without fences the raw
response is the code (a completion). A completion that does not define the entry point is a body continuation
of the prompt's function and is cut at its first non-indented line (HumanEval's stop sequences).

``path=synthetic`` builds a small set of generated one-line function problems (for CPU recipes and tests).
"""
from __future__ import annotations

import ast
import json
import logging
import random
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steprl.rewards.sandbox import Sandbox, SandboxResult
from steprl.rollout.types import Sample
from steprl.tasks.base import parse_json_object
from steprl.tasks.math import ID_KEYS, MathTask

log = logging.getLogger(__name__)

__all__ = ["CodeTask", "CodeResult", "extract_code", "build_program", "run_tests", "synthetic_problems",
           "spec_from_row", "JUDGE", "RUNNER"]

CODE_PROMPT = "{question}\n\nWrite a Python solution inside a ```python code block.\n"
COMPLETION_PROMPT = "{question}"
MAX_CODE_CHARS = 100_000
_EOS_MARKERS = ("<eos>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)```", re.S)
_OPEN_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n", re.S)
_PY_LANGS = {"", "python", "py", "python3", "py3"}
REPORT = "__steprl_report__"
ARM = "__steprl_arm__"

# ---------------------------------------------------------------------------------------------------------------
# the harness runs inside the sandbox (stdlib only) as two processes: the judge (trusted: the tests, the
# verdicts) and the program (untrusted, started by the judge with `__spawn__`). The program's answers cross a
# pipe as tagged JSON and are rebuilt by the judge as plain builtin values; what the program defines that is not
# a plain value stays in its process and is seen by the judge only as an opaque handle (`_Remote`), which can be
# called but never compared, hashed into an answer or used as a truth value.
# ---------------------------------------------------------------------------------------------------------------
RUNNER = r'''
import builtins, io, json, os, sys, types

def _serve(P, chan):
    recv, send = chan
    mode, cap = P["mode"], int(P["max_capture"])
    objects = {}

    class Capped(io.BytesIO):
        def write(self, b):
            if self.tell() + len(b) > cap:
                raise OSError("sandbox: output limit of the test reached")
            return super().write(b)

    def sink():
        return io.TextIOWrapper(Capped(), encoding="utf-8", newline="\n", write_through=True)

    def enc(v, refs=True, depth=0):
        # a plain value, read through the base type's own slots (a subclass cannot change what is sent)
        if depth > 100:
            raise ValueError("value nested too deeply")
        d = depth + 1
        if v is None:
            return ["N"]
        if v is True or v is False:
            return ["B", v]
        if isinstance(v, int):
            return ["i", hex(int.__index__(v))]
        if isinstance(v, float):
            return ["f", float.__float__(v)]
        if isinstance(v, complex):
            return ["c", complex.__dict__["real"].__get__(v), complex.__dict__["imag"].__get__(v)]
        if isinstance(v, str):
            return ["s", str.__str__(v)]
        if isinstance(v, bytes):
            return ["y", bytes.hex(v)]
        if isinstance(v, list):
            return ["l", [enc(x, refs, d) for x in list.__iter__(v)]]
        if isinstance(v, tuple):
            return ["t", [enc(x, refs, d) for x in tuple.__iter__(v)]]
        if isinstance(v, dict):
            return ["d", [[enc(k, refs, d), enc(x, refs, d)] for k, x in dict.items(v)]]
        if isinstance(v, frozenset):
            return ["F", [enc(x, refs, d) for x in frozenset.__iter__(v)]]
        if isinstance(v, set):
            return ["S", [enc(x, refs, d) for x in set.__iter__(v)]]
        if not refs:
            raise TypeError("not a plain value")
        objects[len(objects)] = v
        return ["r", len(objects) - 1]

    def dec(x):
        tag = x[0]
        if tag == "N":
            return None
        if tag in ("B", "f", "s"):
            return x[1]
        if tag == "i":
            return int(x[1], 16)
        if tag == "c":
            return complex(x[1], x[2])
        if tag == "y":
            return bytes.fromhex(x[1])
        if tag in ("l", "t", "S", "F"):
            items = [dec(i) for i in x[1]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d":
            return {dec(k): dec(v) for k, v in x[1]}
        if tag == "r":
            return objects[x[1]]
        if tag == "n":
            if x[1] in ns:
                return ns[x[1]]
            return getattr(ns["Solution"](), x[1])  # LeetCode style: a fresh Solution() per call
        raise ValueError("bad value")

    def fail(e):
        try:
            return {"error": [type(e).__name__, str(e)[:200]]}
        except BaseException:
            return {"error": ["Exception", "?"]}

    sys.stdout = sys.stderr = sink()
    ns = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        code = compile(P["program"], "<solution>", "exec")
        if mode != "stdio":
            exec(code, ns)
        names = {}
        for k, v in list(ns.items()):
            if k.startswith("__"):
                continue
            if isinstance(v, types.ModuleType):
                names[k] = ["m", str(getattr(v, "__name__", ""))]
                continue
            small = v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) < 10_000)
            try:
                # small scalars are sent as values; anything else (a big table, a function) stays here
                names[k] = ["v", enc(v, refs=False)] if small else ["n", k]
            except Exception:
                names[k] = ["n", k]
        ready = {"names": names}
    except BaseException as e:
        ready = fail(e)
    send(ready)
    if "error" in ready:
        return
    while True:
        try:
            req = recv()
        except EOFError:
            return
        sys.stdout = sys.stderr = sink()
        try:
            if req["op"] == "call":
                out = enc(dec(req["ref"])(*dec(req["args"]), **dec(req["kwargs"])))
            elif req["op"] == "getattr":
                out = enc(getattr(dec(req["ref"]), req["name"]))
            else:  # "main": the whole program on this standard input
                buf = sink()
                sys.stdout = buf
                sys.stdin = io.TextIOWrapper(io.BytesIO(req["stdin"].encode("utf-8")), encoding="utf-8")
                try:
                    exec(code, {"__name__": "__main__", "__builtins__": builtins})
                except SystemExit as e:
                    if e.code not in (None, 0):
                        raise
                buf.flush()
                out = ["s", buf.buffer.getvalue().decode("utf-8", "replace")]
            reply = {"value": out}
        except BaseException as e:
            reply = fail(e)
        send(reply)

_serve(__payload__, __channel__)
'''

JUDGE = r'''
import builtins, importlib, io, math, os, signal, sys


class TestTimeout(Exception):
    pass


_NO_IMPORT = frozenset({"antigravity", "this", "turtle", "turtledemo", "idlelib", "tkinter", "webbrowser"})


class ProgramError(Exception):
    pass


class _Remote:
    """Something the program made that is not a plain value: it can be called (and its attributes read), but
    comparing it, hashing it into an answer or taking its truth value raises."""
    __slots__ = ("_prog", "_ref")

    def __init__(self, prog, ref):
        object.__setattr__(self, "_prog", prog)
        object.__setattr__(self, "_ref", ref)

    def __call__(self, *args, **kwargs):
        return self._prog.request({"op": "call", "ref": self._prog.ref(self), "args": _enc(list(args)),
                                   "kwargs": _enc(kwargs)})

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._prog.request({"op": "getattr", "ref": self._prog.ref(self), "name": name})

    def _no(self, *a):
        raise TypeError("the program returned an object that is not a plain value")
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __len__ = __iter__ = __contains__ = _no
    __hash__ = object.__hash__

    def __repr__(self):
        return "<program object>"


_TYPES = {"l": list, "t": tuple, "S": set, "F": frozenset}


def _enc(v, depth=0):
    if depth > 100:
        raise ValueError("value nested too deeply")
    d, t = depth + 1, type(v)
    if v is None:
        return ["N"]
    if t is bool:
        return ["B", v]
    if t is int:
        return ["i", hex(v)]
    if t is float:
        return ["f", v]
    if t is complex:
        return ["c", v.real, v.imag]
    if t is str:
        return ["s", v]
    if t is bytes:
        return ["y", v.hex()]
    if t in (list, tuple, set, frozenset):
        return [{list: "l", tuple: "t", set: "S", frozenset: "F"}[t], [_enc(x, d) for x in v]]
    if t is dict:
        return ["d", [[_enc(k, d), _enc(x, d)] for k, x in v.items()]]
    if t is _Remote:
        return v._prog.ref(v)
    raise TypeError("cannot pass a %s to the program" % t.__name__)


def _dec(x, prog, depth=0):
    """Plain builtin values only, rebuilt here from what the program sent (never an object of its making)."""
    if type(x) is not list or not x or depth > 100:
        raise ValueError("malformed value from the program")
    tag, d = x[0], depth + 1
    if tag == "N":
        return None
    if tag == "B" and type(x[1]) is bool:
        return x[1]
    if tag == "i" and type(x[1]) is str and len(x[1]) < 1_000_000:
        return int(x[1], 16)
    if tag == "f" and type(x[1]) in (int, float):
        return float(x[1])
    if tag == "c" and type(x[1]) in (int, float) and type(x[2]) in (int, float):
        return complex(x[1], x[2])
    if tag == "s" and type(x[1]) is str:
        return x[1]
    if tag == "y" and type(x[1]) is str:
        return bytes.fromhex(x[1])
    if tag in _TYPES and type(x[1]) is list:
        return _TYPES[tag](_dec(i, prog, d) for i in x[1])
    if tag == "d" and type(x[1]) is list:
        return {_dec(k, prog, d): _dec(v, prog, d) for k, v in x[1]}
    if tag == "r" and type(x[1]) is int:
        return _Remote(prog, ("r", x[1], prog.gen))
    raise ValueError("malformed value from the program")


class Program:
    """The untrusted program in its own process; started again after a test that timed out or killed it."""

    def __init__(self, P):
        self.payload = {"program": P["program"], "mode": P["mode"], "max_capture": P["max_capture"]}
        self.runner, self.child, self.gen, self.names = P["runner"], None, 0, {}

    def start(self):
        self.gen += 1
        self.child = __spawn__(self.runner, self.payload)
        try:
            msg = self.child.recv()
        except BaseException:
            self.stop()
            raise
        if "error" in msg:
            self.stop()
            raise ProgramError("%s: %s" % tuple(msg["error"]))
        self.names = msg["names"]

    def stop(self):
        if self.child is not None:
            child, self.child = self.child, None
            child.kill()

    def ref(self, remote):
        ref = remote._ref
        if ref[0] == "n":
            return list(ref)
        if ref[2] != self.gen:
            raise RuntimeError("an object of a program that was restarted")
        return ["r", ref[1]]

    def request(self, req):
        if self.child is None:
            self.start()
        try:
            self.child.send(req)
            msg = self.child.recv()
        except BaseException:
            self.stop()
            raise
        if "error" in msg:
            name, text = (list(msg["error"]) + ["", ""])[:2]
            exc = getattr(builtins, name, None) if type(name) is str else None
            if not (isinstance(exc, type) and issubclass(exc, Exception)):
                exc = RuntimeError
            raise exc(str(text))
        return _dec(msg["value"], self)


def _main(P):
    nonce, mode, limit = P["nonce"], P["mode"], float(P["test_timeout_s"])
    write = os.write

    def report(i, ok):
        write(1, ("%s %d %d\n" % (nonce, i, 1 if ok else 0)).encode())

    def note(e):
        write(2, ("%s: %s\n" % (type(e).__name__, e))[:300].encode("utf-8", "replace"))

    def on_alarm(signum, frame):
        raise TestTimeout("test timed out")
    signal.signal(signal.SIGALRM, on_alarm)

    def arm(seconds=None):
        signal.setitimer(signal.ITIMER_REAL, limit if seconds is None else seconds)

    def disarm():
        signal.setitimer(signal.ITIMER_REAL, 0)

    sys.stdout = sys.stderr = io.StringIO()  # what the test code prints
    prog = Program(P)
    try:
        arm()
        prog.start()
        disarm()
    except BaseException as e:
        disarm()
        note(e)
        return

    if mode == "script":
        # the tests see the program's names, except that a name of a builtin or of a standard module stays the
        # real one (a program's own `abs` or `math` would judge its answers), and what the prompt defines (the
        # trusted prefix: HumanEval's helpers such as `poly`) comes from the prompt, not from the program
        entry, ns = P.get("entry_point"), {}
        for k, (kind, x) in prog.names.items():
            if k != entry and hasattr(builtins, k):
                continue
            if k != entry and (kind == "m" or k in sys.stdlib_module_names):
                if kind == "m" and k in sys.stdlib_module_names and k not in _NO_IMPORT:
                    try:
                        ns[k] = importlib.import_module(k)
                    except Exception:
                        pass
            elif kind == "v":
                ns[k] = _dec(x, prog)
            else:
                ns[k] = _Remote(prog, ("n", k))
        prefix = P.get("prefix") or ""
        for src in ((prefix, prefix.rstrip("\n") + "\n    pass\n") if prefix.strip() else ()):
            trusted = {"__name__": "__prompt__", "__builtins__": builtins}
            try:
                arm()
                exec(compile(src, "<prompt>", "exec"), trusted)
                disarm()
            except BaseException:
                disarm()
                continue
            ns.update((k, v) for k, v in trusted.items() if k != entry and not k.startswith("__"))
            break
        ns.update({"__name__": "__tests__", "__builtins__": builtins, REPORT_NAME: report, ARM_NAME: arm})
        try:
            exec(compile(P["test_code"], "<tests>", "exec"), ns)
        except BaseException as e:
            note(e)
        disarm()
        return

    if mode == "call":
        name = P["entry_point"]
        kind = prog.names.get(name, ["n"])[0]
        if kind != "n" or (name not in prog.names and "Solution" not in prog.names):
            return
        fn = _Remote(prog, ("n", name))
        for i, t in enumerate(P["tests"]):
            ok = False
            try:
                args = t["input"]
                arm()
                got = fn(**args) if isinstance(args, dict) else fn(*args)
                disarm()
                ok = _equal(got, t["output"])
            except BaseException:
                disarm()
            report(i, ok)
        return

    if mode == "stdio":
        for i, t in enumerate(P["tests"]):
            ok = False
            try:
                arm()
                got = prog.request({"op": "main", "stdin": t["input"]})
                disarm()
                ok = type(got) is str and _same_output(got, t["output"])
            except BaseException:
                disarm()
            report(i, ok)
        return


def _norm(x):
    if isinstance(x, tuple):
        return [_norm(v) for v in x]
    if isinstance(x, list):
        return [_norm(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in x.items()}
    return x


def _close(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def _equal(got, expected):
    got = _norm(got)
    if _close(got, expected):
        return True
    # APPS wraps a single return value in a list
    return isinstance(expected, list) and len(expected) == 1 and _close(got, expected[0])


def _lines(text):
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _same_output(got, expected):
    if _lines(got) == _lines(expected):
        return True
    a, b = got.split(), expected.split()
    if a == b:
        return True
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            if not math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-6):
                return False
        except ValueError:
            return False
    return True


REPORT_NAME = "__steprl_report__"
ARM_NAME = "__steprl_arm__"
_main(__payload__)
os._exit(0)
'''


# ---------------------------------------------------------------------------------------------------------------
# code extraction and programs
# ---------------------------------------------------------------------------------------------------------------
def _strip_eos(text: str) -> str:
    for m in _EOS_MARKERS:
        k = text.find(m)
        if k >= 0:
            text = text[:k]
    return text


def _defines(code: str, entry_point: str | None) -> bool:
    if not entry_point:
        return False
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(|^class\s+Solution\b", code, re.M) is not None


def extract_code(response: Any, entry_point: str | None = None) -> str | None:
    """The program written in ``response`` (see the module docstring), or None. Never raises."""
    try:
        if not isinstance(response, str) or not response.strip():
            return None
        text = _strip_eos(response)
        blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in _PY_LANGS]
        if not blocks:  # an unclosed fence at the end: a truncated response
            opens = list(_OPEN_FENCE.finditer(text))
            if opens and text.count("```") % 2 == 1 and opens[-1].group(1).lower() in _PY_LANGS:
                blocks = [text[opens[-1].end():]]
        if blocks:
            defining = [b for b in blocks if _defines(b, entry_point)]
            code = (defining or blocks)[-1]
        elif "```" in text:
            return None  # fenced, but in no language we can run
        else:
            code = text
        code = code.rstrip()
        if not code.strip() or len(code) > MAX_CODE_CHARS:
            return None
        return code + "\n"
    except Exception:  # noqa: BLE001 - never raise on model output
        log.debug("extract_code failed", exc_info=True)
        return None


def _cut_continuation(code: str) -> str:
    """A body continuation ends at its first non-empty line that starts in column 0."""
    lines = code.split("\n")
    for i, line in enumerate(lines):
        if i > 0 and line and not line[0].isspace():
            return "\n".join(lines[:i]).rstrip() + "\n"
    return code


def build_program(code: str, prefix: str | None, entry_point: str | None) -> str:
    """The program to test: ``code`` alone, or after the prompt's code ``prefix`` (HumanEval): a response that
    defines the entry point follows the prefix as a whole; otherwise it continues the prefix's function."""
    if not prefix:
        return code
    if _defines(code, entry_point) or not code[:1].isspace():
        head = prefix.rstrip("\n") + "\n"
        for candidate in (head, head + "    pass\n"):  # a bare signature needs a body to compile
            if _compiles(candidate):
                return candidate + "\n\n" + code
        return code
    return prefix + _cut_continuation(code)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<prefix>", "exec")
        return True
    except Exception:  # noqa: BLE001 - SyntaxError, RecursionError, MemoryError, ...
        return False


# ---------------------------------------------------------------------------------------------------------------
# tests: every format becomes one of three harness modes
# ---------------------------------------------------------------------------------------------------------------
def _wrap_stmts(stmts: list[ast.stmt], i: int) -> ast.stmt:
    """``try: arm(); <stmts>; report(i, True)`` / ``except BaseException: report(i, False)``."""
    call = lambda name, *args: ast.Expr(ast.Call(ast.Name(name, ast.Load()),  # noqa: E731
                                                 [ast.Constant(a) for a in args], []))
    return ast.Try(body=[call(ARM), *stmts, call(REPORT, i, True)],
                   handlers=[ast.ExceptHandler(ast.Name("BaseException", ast.Load()), None, [call(REPORT, i, False)])],
                   orelse=[], finalbody=[])


def _wrap_asserts(body: list[ast.stmt], start: int) -> tuple[list[ast.stmt], int]:
    out, n = [], start
    for st in body:
        if isinstance(st, ast.Assert):
            out.append(_wrap_stmts([st], n))
            n += 1
        else:
            out.append(st)
    return out, n


def script_tests(test_code: str, entry_point: str | None = None) -> tuple[str, int]:
    """Test code with each top-level ``assert`` (of ``check`` when it calls a candidate, else of the module)
    turned into a counted test. Returns ``(code, number of tests)``."""
    tree = ast.parse(test_code)
    check = next((st for st in tree.body if isinstance(st, ast.FunctionDef) and st.name == "check"), None)
    if check is not None and entry_point:
        check.body, n = _wrap_asserts(check.body, 0)
        call = ast.parse(f"check({entry_point})").body
        if n == 0:  # asserts nested in loops only: the whole check is one test
            tree.body.append(_wrap_stmts(call, 0))
            n = 1
        else:
            tree.body.extend(call)
    else:
        tree.body, n = _wrap_asserts(tree.body, 0)
        if n == 0:
            tree.body = [_wrap_stmts(tree.body, 0)]
            n = 1
    return ast.unparse(ast.fix_missing_locations(tree)), n


def assert_list_tests(tests: list[str], setup: str = "") -> tuple[str, int]:
    """One test per string (each may hold several statements), after optional setup code."""
    body: list[ast.stmt] = list(ast.parse(setup).body) if setup and setup.strip() else []
    for i, t in enumerate(tests):
        if not isinstance(t, str):
            raise ValueError(f"test {i} is a {type(t).__name__}, expected a string of Python code")
        body.append(_wrap_stmts(ast.parse(t).body, i))
    return ast.unparse(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))), len(tests)


def _as_text(x: Any) -> str:
    if isinstance(x, list):
        return "\n".join(map(str, x))
    return x if isinstance(x, str) else json.dumps(x)


def _io_pairs(inputs: list, outputs: list, fn_name: str | None, where: str) -> dict:
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise ValueError(f"{where}: `inputs` and `outputs` must be lists of the same length")
    if not inputs:
        raise ValueError(f"{where}: no tests")
    if fn_name:
        tests = [{"input": i if isinstance(i, (list, dict)) else [i], "output": o} for i, o in zip(inputs, outputs)]
        return {"mode": "call", "tests": tests, "entry_point": fn_name, "n_tests": len(tests)}
    tests = [{"input": _as_text(i), "output": _as_text(o)} for i, o in zip(inputs, outputs)]
    return {"mode": "stdio", "tests": tests, "n_tests": len(tests)}


def spec_from_row(row: Mapping, where: str = "row") -> dict:
    """The harness spec of a data row: ``mode`` (script | call | stdio), its tests, ``n_tests``, and
    ``entry_point`` / ``prefix`` where they apply. Raises ``ValueError`` naming what is wrong."""
    entry = row.get("entry_point") or row.get("fn_name")
    entry = entry if isinstance(entry, str) and entry.strip() else None
    if isinstance(row.get("test"), str) and row["test"].strip() and entry:  # HumanEval
        code, n = script_tests(row["test"], entry)
        prefix = row.get("prompt") if isinstance(row.get("prompt"), str) else ""
        return {"mode": "script", "test_code": code, "n_tests": n, "entry_point": entry, "prefix": prefix}
    if isinstance(row.get("test_list"), list):  # MBPP
        code, n = assert_list_tests(row["test_list"], row.get("test_setup_code") or "")
        return {"mode": "script", "test_code": code, "n_tests": n, "entry_point": entry, "prefix": ""}
    if "input_output" in row:  # APPS / TACO
        io_spec = row["input_output"]
        if isinstance(io_spec, str):
            io_spec = parse_json_object(io_spec, where, "`input_output`")
        if not isinstance(io_spec, Mapping):
            raise ValueError(f"{where}: `input_output` must be an object with `inputs` and `outputs`")
        return _io_pairs(io_spec.get("inputs"), io_spec.get("outputs"), io_spec.get("fn_name") or entry, where)
    tests = row.get("tests")
    if isinstance(tests, str) and tests.strip():
        try:
            tests = json.loads(tests) if tests.lstrip()[0] in "[{" else tests
        except json.JSONDecodeError:
            pass
    prefix = row.get("prompt") if isinstance(row.get("prompt"), str) and _defines(row["prompt"], entry) else ""
    if isinstance(tests, str):
        if not tests.strip():
            raise ValueError(f"{where}: `tests` is empty")
        code, n = script_tests(tests, entry)
        return {"mode": "script", "test_code": code, "n_tests": n, "entry_point": entry, "prefix": prefix}
    if isinstance(tests, Mapping):
        return _io_pairs(tests.get("inputs"), tests.get("outputs"), tests.get("fn_name") or entry, where)
    if isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
        code, n = assert_list_tests(tests, row.get("test_setup_code") or "")
        return {"mode": "script", "test_code": code, "n_tests": n, "entry_point": entry, "prefix": prefix}
    if isinstance(tests, list) and tests and all(isinstance(t, Mapping) and "input" in t and "output" in t
                                                 for t in tests):
        spec = _io_pairs([t["input"] for t in tests], [t["output"] for t in tests], entry, where)
        spec["prefix"] = prefix
        return spec
    raise ValueError(
        f"{where}: no usable tests; expected `test` + `entry_point` (HumanEval), `test_list` (MBPP), "
        f"`input_output` (APPS/TACO) or `tests` (assert strings, test code, or input/output pairs); "
        f"keys found: {sorted(map(str, row.keys()))}")


# ---------------------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CodeResult:
    passed: int
    total: int
    status: str  # the sandbox status (ok, error, timeout, output_limit, ...) or "no_code"
    detail: str = ""

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0


def run_tests(program: str, spec: Mapping, sandbox: Sandbox, test_timeout_s: float = 2.0,
              max_capture: int = 1 << 20) -> CodeResult:
    """Run ``program`` against the tests of ``spec`` (from :func:`spec_from_row`): the tests and their verdicts
    in the sandbox's trusted judge process, the program in a locked-down process of its own."""
    nonce = secrets.token_hex(16)
    payload = {"nonce": nonce, "mode": spec["mode"], "program": program, "test_timeout_s": float(test_timeout_s),
               "max_capture": int(max_capture), "tests": spec.get("tests"), "test_code": spec.get("test_code"),
               "entry_point": spec.get("entry_point"), "prefix": spec.get("prefix") or "", "runner": RUNNER}
    res: SandboxResult = sandbox.run_judged(JUDGE, payload)
    n = int(spec["n_tests"])
    seen: dict[int, bool] = {}
    for line in res.stdout.splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == nonce and parts[1].isdigit() and parts[2] in ("0", "1"):
            i = int(parts[1])
            if 0 <= i < n and i not in seen:
                seen[i] = parts[2] == "1"
    detail = res.stderr.strip().splitlines()[-1][:300] if res.stderr.strip() else ""
    return CodeResult(sum(seen.values()), n, res.status, detail)


# ---------------------------------------------------------------------------------------------------------------
# a tiny generated data set
# ---------------------------------------------------------------------------------------------------------------
_SYNTH = [
    # (name, params, docstring, body, python function of the inputs, input generator)
    ("add_{k}", "x", "Return x plus {k}.", "return x + {k}", lambda k: (lambda x: x + k), lambda r: (r.randint(-50, 50),)),
    ("times_{k}", "x", "Return x times {k}.", "return x * {k}", lambda k: (lambda x: x * k), lambda r: (r.randint(-20, 20),)),
    ("sub_{k}", "x", "Return x minus {k}.", "return x - {k}", lambda k: (lambda x: x - k), lambda r: (r.randint(-50, 50),)),
    ("larger", "a, b", "Return the larger of a and b.", "return max(a, b)", lambda k: max,
     lambda r: (r.randint(-9, 9), r.randint(-9, 9))),
    ("total", "xs", "Return the sum of the list xs.", "return sum(xs)", lambda k: sum,
     lambda r: ([r.randint(0, 9) for _ in range(r.randint(0, 4))],)),
    ("is_even", "x", "Return True if x is even.", "return x % 2 == 0", lambda k: (lambda x: x % 2 == 0),
     lambda r: (r.randint(0, 99),)),
    ("reverse", "s", "Return the string s reversed.", "return s[::-1]", lambda k: (lambda s: s[::-1]),
     lambda r: ("".join(r.choice("abcde") for _ in range(r.randint(1, 5))),)),
    ("square", "x", "Return x squared.", "return x * x", lambda k: (lambda x: x * x), lambda r: (r.randint(-12, 12),)),
]


def synthetic_problems(n: int, seed: int = 0, tests_per_problem: int = 4) -> list[dict]:
    """``n`` generated one-line function problems (HumanEval-like: the prompt is the function header and
    docstring, the solution its body), each with ``tests_per_problem`` asserts. Deterministic in ``seed``."""
    rng = random.Random(f"code-synth-{seed}")
    rows = []
    for i in range(n):
        name, params, doc, body, fn, gen = _SYNTH[rng.randrange(len(_SYNTH))]
        k = rng.randint(1, 9)
        fname = name.format(k=k)
        f = fn(k)
        tests = []
        for _ in range(tests_per_problem):
            args = gen(rng)
            tests.append(f"assert {fname}({', '.join(map(repr, args))}) == {f(*args)!r}")
        rows.append({"task_id": f"synthetic/{i}", "entry_point": fname,
                     "prompt": f'def {fname}({params}):\n    """{doc.format(k=k)}"""\n',
                     "solution": f"    {body.format(k=k)}\n", "tests": tests})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------------------------
class CodeTask(MathTask):
    """Programming problems graded by running their unit tests in the sandbox (reward = fraction passed).

    Loading (``path`` / ``hf_name`` / ``val_path`` / ``num_val`` / ``seed``) works as in :class:`MathTask`;
    ``path="synthetic"`` generates ``num_synthetic`` problems instead of reading a file.

    Args:
        prompt_template: ``str.format`` template with ``{question}`` (the problem text, plus APPS's starter code).
            None: the prompt as is for completion-style problems (the prompt is code: HumanEval, synthetic),
            else :data:`CODE_PROMPT` (asks for a ```python block).
        sandbox: :class:`~steprl.rewards.sandbox.Sandbox` keyword arguments (``limits``, ``backend``).
        test_timeout_s: time budget of each test inside the sandboxed run.
    """

    name = "code"
    has_step_checker = False

    def __init__(self, path: str | None = None, hf_name: str | None = None, hf_split: str = "test",
                 hf_config: str | None = None, val_path: str | None = None, num_val: int | None = None,
                 prompt_template: str | None = None, seed: int = 0, name: str = "code",
                 hf_val_split: str | None = None, splitter: Any = "double_newline",
                 sandbox: Mapping | Sandbox | None = None, test_timeout_s: float = 2.0,
                 num_synthetic: int = 512):
        self.code_template = prompt_template
        if prompt_template is not None:
            try:
                prompt_template.format(question="q")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"task.prompt_template {prompt_template!r} must be a str.format template with "
                                 f"only a {{question}} field: {e!r}") from e
        if isinstance(sandbox, Sandbox):
            self.sandbox = sandbox
        else:
            self.sandbox = Sandbox(**dict(sandbox or {}))
        self.sandbox.check()  # logs the backend; refuses to go on where model-written code must not run
        if not test_timeout_s > 0:
            raise ValueError(f"task.test_timeout_s must be > 0, got {test_timeout_s}")
        self.test_timeout_s = float(test_timeout_s)
        self.num_synthetic = int(num_synthetic)
        super().__init__(path=path, hf_name=hf_name, hf_split=hf_split, hf_config=hf_config, val_path=val_path,
                         num_val=num_val, prompt_template="{question}", seed=seed, name=name,
                         hf_val_split=hf_val_split, splitter=splitter, timeout_s=None)

    def _rows_from_file(self, path: str) -> list[tuple[str, Any]]:
        if str(path) == "synthetic":
            return [(f"synthetic row {i + 1}", row) for i, row in
                    enumerate(synthetic_problems(self.num_synthetic, self.seed))]
        return super()._rows_from_file(path)

    def _to_sample(self, where: str, row: Mapping, index: int) -> Sample:  # rows checked by MathTask._samples
        spec = spec_from_row(row, where)
        question = next((row[k] for k in ("prompt", "question", "text", "problem", "description")
                         if isinstance(row.get(k), str) and row[k].strip()), None)
        if question is None:
            raise ValueError(f"{where}: no problem text (tried prompt, question, text, problem, description); "
                             f"keys found: {sorted(map(str, row.keys()))}")
        starter = row.get("starter_code")
        if isinstance(starter, str) and starter.strip():
            question = f"{question.rstrip()}\n\n{starter}"
        completion_style = bool(spec.get("prefix"))
        template = self.code_template or (COMPLETION_PROMPT if completion_style else CODE_PROMPT)
        solution = row.get("canonical_solution") or row.get("solution") or row.get("code")
        if solution is None and row.get("solutions"):
            sols = row["solutions"]
            if isinstance(sols, str):
                try:
                    sols = json.loads(sols)
                except json.JSONDecodeError:
                    sols = None
            solution = sols[0] if isinstance(sols, list) and sols and isinstance(sols[0], str) else None
        if isinstance(solution, str) and not completion_style:
            solution = f"```python\n{solution.rstrip()}\n```"
        uid = next((f"{self.name}-{row[k]}" for k in ID_KEYS if isinstance(row.get(k), (str, int))), None)
        meta = {"row": index, "code": spec}
        for k in ("difficulty", "data_source", "source"):
            if isinstance(row.get(k), (str, int, float)):
                meta[k] = row[k]
        return Sample(prompt=template.format(question=question), answer=None,
                      solution=solution if isinstance(solution, str) else None,
                      uid=uid or f"{self.name}-{index}", source=self.name, meta=meta)

    # ----- scoring --------------------------------------------------------------------------------------------
    def run(self, sample: Sample, response: str) -> CodeResult:
        """The tests' outcome for one response (``status="no_code"`` when no program could be extracted)."""
        spec = sample.meta["code"]
        code = extract_code(response, spec.get("entry_point"))
        if code is None:
            return CodeResult(0, int(spec["n_tests"]), "no_code")
        program = build_program(code, spec.get("prefix"), spec.get("entry_point"))
        return run_tests(program, spec, self.sandbox, self.test_timeout_s)

    def _verify(self, sample: Sample, response: str) -> float:
        return self.run(sample, response).score

    def _extract_answer(self, response: str) -> str | None:
        return None  # programs are not voted on (maj@k is not defined for code)

    def __repr__(self) -> str:
        return f"CodeTask(name={self.name!r}, path={self.path!r}, val_path={self.val_path!r}, sandbox={self.sandbox!r})"
