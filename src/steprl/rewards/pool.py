"""A small process pool for reward components that may hang or crash.

Verifiers such as ``math_verify.parse`` can hang inside C code where no signal or exception reaches them
(Math-Verify #65), and a native crash takes the whole process with it. :class:`BoundedPool` runs each call in a
persistent worker process and gives every item its own wall-clock budget, counted from the moment a worker
starts that item (time spent queued behind other items does not count). A worker that runs past the budget is
killed with SIGKILL and replaced; a worker that dies marks its current item as an error and is replaced. The
caller always gets exactly one :class:`ItemResult` per item, in input order, and never an exception from the
items themselves.

How a call runs
---------------
``map(fn, items)`` pickles ``fn`` once per call and ships it to a worker only when it differs from what that
worker already holds; each item is pickled on its own, so an unpicklable item only fails itself. Items are sent
in chunks whose size shrinks as the queue drains (guided scheduling: ``remaining // (2 * num_workers)``, capped
by ``max_chunk``), and results come back in batches (at the end of a chunk, and every ``_FLUSH_S`` within
one). For 128 trivial items on 2 workers this is ~3-7 ms per call against ~20 ms with one item per message.

Chunking does not loosen the timeout: before each item the worker writes the item's index and start time into
shared memory and the parent checks that, so the budget is per item and exact to a few milliseconds. When a
worker is killed or dies, its other items (not started, or finished but not yet reported) go back to the front
of the queue, and the rest of the call runs one item per message: slow inputs tend to come in groups (the G
responses to one prompt sit side by side), and a second hang in the same chunk would otherwise wait for the
first one's kill. Each call may therefore take one timeout longer than an ideal schedule, never more.

Imports do not eat an item's budget: while a worker unpickles ``fn`` or an item's arguments (which may import
modules, torch takes seconds) the start time is set ``_LOAD_GRACE_S`` into the future. Import what a verifier
needs at module level: an import inside the verifier runs inside the budget.

Clock: the start time is ``time.monotonic()`` read in the worker and compared in the parent. That clock is
system-wide on Linux, macOS and Windows, which this relies on.

``num_workers=0`` runs inline in the calling process. Exceptions still become ``"error"``. The timeout is
enforced with ``signal.setitimer`` only in the main thread on Unix, and only for Python code: a loop inside C
code (the Math-Verify hang), code that swallows the timeout exception, or code that installs its own
``SIGALRM`` timer (math_verify's ``parsing_timeout`` does, and cancels ours) is not stopped. Anywhere else the
timeout is not enforced at all. Use workers when the verifier is not trusted.

Start-up cost: workers start lazily on the first call, with the chosen start method. With ``spawn`` each
worker imports the parent's main module (``__mp_main__``) and whatever ``fn`` needs, so a training script that
imports torch pays that import per worker start; replacements are started as soon as a worker is killed, so
their start-up overlaps the rest of the call.
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import contextvars
import multiprocessing
import multiprocessing.connection
import multiprocessing.util  # noqa: F401  (registers its atexit hook before ours: ours then runs first)
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Callable, NamedTuple, Sequence

__all__ = ["BoundedPool", "ItemResult", "ScoreTimeout", "format_exception", "reporting_timeouts",
           "timeouts_reported"]

OK, ERROR, TIMEOUT = "ok", "error", "timeout"
_READY = -1  # message index a worker sends once it has started
_FLUSH_S = 0.005  # a worker sends finished results at least this often while working through a chunk
_LOAD_GRACE_S = 60.0  # extra time for unpickling fn and args in a worker (imports), before the budget starts
_START_TIMEOUT_S = 300.0  # a worker that has not started by then is killed and counted as a failed start
_MAX_START_FAILURES = 3  # failed starts in a row (no worker came up in between) before map() gives up


class ScoreTimeout(BaseException):
    """A component's own time limit ran out (e.g. the math grader's CPU-time limit): the pool counts the item as
    a timeout (``"timeout"``), not an error. A BaseException, so a verifier's ``except Exception`` does not
    swallow it. Components raise it only inside :func:`reporting_timeouts` (the reward pipeline's calls);
    called directly, they score such an item 0 as before."""


_REPORT_TIMEOUTS: contextvars.ContextVar[bool] = contextvars.ContextVar("steprl_report_timeouts", default=False)


def timeouts_reported() -> bool:
    """True inside :func:`reporting_timeouts`: a component should raise :class:`ScoreTimeout` on its timeout."""
    return _REPORT_TIMEOUTS.get()


@contextlib.contextmanager
def reporting_timeouts():
    token = _REPORT_TIMEOUTS.set(True)
    try:
        yield
    finally:
        _REPORT_TIMEOUTS.reset(token)


class ItemResult(NamedTuple):
    """Outcome of one item: ``ok`` and the return value, or not ok and an error string."""

    ok: bool
    value: Any  # fn's return value when ok, else a one-line description of what went wrong
    status: str  # "ok" | "error" | "timeout"


def format_exception(exc: BaseException) -> str:
    """The last line of the traceback plus where it was raised, e.g. ``ValueError: bad (at v.py:12 in f)``."""
    line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    tb = exc.__traceback__
    if tb is not None:
        frame = traceback.extract_tb(tb)[-1]
        line += f" (at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name})"
    return line


# --------------------------------------------------------------------------------------------------- worker side

def _watch_parent(ppid: int) -> None:
    # Exit when the parent is gone even if the main thread is stuck in Python code (the pipe EOF covers an
    # idle worker; PR_SET_PDEATHSIG covers a worker stuck in C code on Linux).
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(1)


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # best effort; the watchdog thread is the fallback
        pass


def _send(conn, message: list) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _worker_main(conn, clock, slot: int, ppid: int, death_signal: bool) -> None:
    """Loop of a worker process: receive a chunk, run it item by item, report back.

    Shared memory ``clock[2*slot]`` holds the start time of the running item (0 between items) and
    ``clock[2*slot+1]`` its index, so the parent can time it and, after killing us, knows which item it was.
    While fn or an item's arguments are unpickled (which may import modules: torch takes seconds) the start
    time is set ``_LOAD_GRACE_S`` into the future, so imports do not eat the item's budget but cannot hang
    forever either.
    Results go back as lists of ``(idx, ok, status, payload)`` with each payload pickled on its own (the parent
    can always read which item a message is about), flushed at the end of the chunk and at least every
    ``_FLUSH_S`` seconds, so a kill loses little finished work. ``idx == -1`` says the worker is ready.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then closes us
    if death_signal:
        _set_parent_death_signal()
    if os.getppid() != ppid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()

    start_at, index_at = 2 * slot, 2 * slot + 1
    fn_key, fn, fn_error = None, None, None
    try:
        _send(conn, [(_READY, True, OK, b"")])
        while True:
            msg = conn.recv()
            if msg is None:
                break
            key, fn_blob, chunk = msg
            if fn_blob is not None:
                fn_key, fn, fn_error = key, None, None
                clock[index_at] = chunk[0][0]  # loading fn may import modules: give it the grace period
                clock[start_at] = time.monotonic() + _LOAD_GRACE_S
                try:
                    fn = pickle.loads(fn_blob)
                except BaseException as exc:  # noqa: BLE001 - reported per item below
                    fn_error = f"could not load fn in worker: {format_exception(exc)}"
            out, flushed = [], time.monotonic()
            for idx, blob in chunk:
                clock[index_at] = idx
                clock[start_at] = time.monotonic() + _LOAD_GRACE_S  # unpickling args may import modules too
                try:
                    if fn_error is not None or key != fn_key:
                        raise RuntimeError(fn_error or "worker holds a different fn (protocol error)")
                    args = pickle.loads(blob)
                    clock[start_at] = time.monotonic()  # the item's budget starts now
                    value = fn(*args)
                    ok, status = True, OK
                except BaseException as exc:  # noqa: BLE001 - SystemExit from a verifier is an error too
                    ok, value = False, format_exception(exc)
                    status = TIMEOUT if isinstance(exc, ScoreTimeout) else ERROR
                clock[start_at] = 0.0
                try:
                    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001
                    ok, status = False, ERROR
                    payload = pickle.dumps(f"result not picklable: {format_exception(exc)}")
                out.append((idx, ok, status, payload))
                if time.monotonic() - flushed > _FLUSH_S:
                    _send(conn, out)
                    out, flushed = [], time.monotonic()
            if out:
                _send(conn, out)
    except (EOFError, OSError):  # the parent went away
        pass
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------- parent side

class _Worker:
    __slots__ = ("proc", "conn", "slot", "fn_key", "pending", "ready", "born")

    def __init__(self, proc, conn, slot: int):
        self.proc = proc
        self.conn = conn
        self.slot = slot
        self.fn_key = None  # which fn the worker holds
        self.pending: collections.deque[int] = collections.deque()  # items sent and not yet answered
        self.ready = False  # set by the worker's first message
        self.born = time.monotonic()


class _Workers:
    """Everything the finalizer needs to shut the workers down, without a reference to the pool itself."""

    def __init__(self, ctx, num_workers: int):
        self.ctx = ctx
        self.owner_pid = os.getpid()
        self.clock = ctx.RawArray("d", 2 * max(num_workers, 1))  # [start, index] per slot; see _worker_main
        self.slots: list[_Worker | None] = [None] * num_workers

    def start(self, slot: int) -> _Worker:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        self.clock[2 * slot] = 0.0
        death_signal = threading.current_thread() is threading.main_thread()
        proc = self.ctx.Process(
            target=_worker_main,
            args=(child_conn, self.clock, slot, os.getpid(), death_signal),
            name=f"steprl-reward-worker-{slot}",
            daemon=False,  # a daemonic worker could not use multiprocessing itself
        )
        proc.start()
        child_conn.close()
        worker = _Worker(proc, parent_conn, slot)
        self.slots[slot] = worker
        return worker

    def stop(self, worker: _Worker, graceful: bool) -> None:
        if self.slots[worker.slot] is worker:
            self.slots[worker.slot] = None
        if graceful:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
            worker.proc.join(timeout=1.0)
        if worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join()  # reap: no zombie
        worker.conn.close()
        worker.proc.close()

    def close(self) -> None:
        if os.getpid() != self.owner_pid:  # a forked copy of the pool does not own these processes
            self.slots = [None] * len(self.slots)
            return
        workers = [w for w in self.slots if w is not None]
        for w in workers:  # ask everyone first, then wait: shutdown takes one join, not num_workers
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 1.0
        for w in workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            self.stop(w, graceful=False)


_LIVE_POOLS: "weakref.WeakSet[BoundedPool]" = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    # Registered after multiprocessing.util's exit hook, so it runs before it: that hook joins non-daemonic
    # children and would wait forever on idle workers.
    for pool in list(_LIVE_POOLS):
        pool.close()


class _InlineTimeout(BaseException):
    """Raised by the SIGALRM handler in inline mode (a BaseException so ``except Exception`` does not eat it)."""


class BoundedPool:
    """Run ``fn(*args)`` for many items in persistent worker processes, each item with its own time budget.

    >>> with BoundedPool(num_workers=2, timeout_s=1.0) as pool:          # doctest: +SKIP
    ...     pool.map(verify, [(sample, text) for sample, text in batch])
    [ItemResult(ok=True, value=1.0, status='ok'), ItemResult(ok=False, value='timeout after 1s', ...)]

    Args:
        num_workers: worker processes; 0 runs inline in the calling process (see the module doc for what the
            timeout can and cannot stop there).
        timeout_s: wall-clock budget per item, from the moment a worker starts it. ``None`` disables it.
        mp_context: start method name (``"spawn"``, ``"forkserver"``, ``"fork"``) or a multiprocessing context.
        max_chunk: most items sent to a worker in one message; 1 disables chunking.

    ``fn`` and the items must be picklable (module-level functions, bound methods of picklable objects); ``fn``
    is pickled once per call, so a heavy object behind a bound method costs one pickle per call, and is sent
    to a worker only when its pickled bytes changed. Concurrent ``map`` calls from several threads are
    serialised by a lock. A copy of the pool in another process (fork, pickling) starts its own workers there.
    """

    def __init__(self, num_workers: int, timeout_s: float | None, mp_context: Any = "spawn",
                 max_chunk: int = 64):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
        if max_chunk < 1:
            raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
        self.num_workers = int(num_workers)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.mp_context = mp_context
        self.max_chunk = int(max_chunk)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._fn_blob: bytes | None = None
        self._fn_key = 0
        self._start_failures = 0
        self._workers: _Workers | None = None
        self._finalizer = None
        if self.num_workers > 0:
            ctx = (multiprocessing.get_context(self.mp_context) if isinstance(self.mp_context, str)
                   else self.mp_context)
            self._workers = _Workers(ctx, self.num_workers)
            self._finalizer = weakref.finalize(self, self._workers.close)
            _LIVE_POOLS.add(self)

    # pickling / deepcopy: copy the configuration, not the processes
    def __getstate__(self) -> dict:
        return {"num_workers": self.num_workers, "timeout_s": self.timeout_s,
                "mp_context": self.mp_context if isinstance(self.mp_context, str) else "spawn",
                "max_chunk": self.max_chunk}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __enter__(self) -> "BoundedPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"BoundedPool(num_workers={self.num_workers}, timeout_s={self.timeout_s}, "
                f"mp_context={self.mp_context!r}{', closed' if self._closed else ''})")

    def close(self) -> None:
        """Stop and reap all workers. Idempotent; the pool cannot be used afterwards."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()  # runs _Workers.close once
        _LIVE_POOLS.discard(self)

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the live workers (for tests and debugging)."""
        if self._workers is None:
            return []
        return [w.proc.pid for w in self._workers.slots if w is not None]

    # ----------------------------------------------------------------------------------------------------- map

    def map(self, fn: Callable[..., Any], items: Sequence[Sequence[Any]]) -> list[ItemResult]:
        """Run ``fn(*item)`` for each item; one :class:`ItemResult` per item, in input order.

        Raises only for misuse: a closed pool, or an ``fn`` that cannot be pickled for the workers.
        """
        if self._closed:
            raise RuntimeError("BoundedPool is closed")
        if self._workers is not None and self._workers.owner_pid != os.getpid():
            self._init_runtime()  # a forked copy: the workers it sees belong to the parent
        if not items:
            return []
        with self._lock:
            if self.num_workers == 0:
                return self._map_inline(fn, items)
            try:
                return self._map_workers(fn, items)
            except BaseException:
                # interrupted (Ctrl-C) or gave up: workers still holding items of this call would answer
                # into the next one, so stop them; map() starts fresh ones
                ws = self._workers
                for w in list(ws.slots):
                    if w is not None and w.pending:
                        ws.stop(w, graceful=False)
                raise

    # inline ------------------------------------------------------------------------------------------------

    def _map_inline(self, fn, items) -> list[ItemResult]:
        use_timer = (self.timeout_s is not None and hasattr(signal, "setitimer")
                     and threading.current_thread() is threading.main_thread())
        if not use_timer:
            return [self._call_inline(fn, args, None) for args in items]
        fired = [False]

        def on_alarm(signum, frame):
            fired[0] = True
            raise _InlineTimeout

        outer_delay, _ = signal.getitimer(signal.ITIMER_REAL)
        began = time.monotonic()
        old_handler = signal.signal(signal.SIGALRM, on_alarm)
        try:
            return [self._call_inline(fn, args, fired) for args in items]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            if outer_delay > 0:  # someone else's timer was running: give it back what is left of it
                signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_delay - (time.monotonic() - began)))

    def _call_inline(self, fn, args, fired) -> ItemResult:
        try:
            if fired is None:
                return ItemResult(True, fn(*args), OK)
            fired[0] = False
            try:
                signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                value = fn(*args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if fired[0]:  # fn caught our exception and carried on
                return ItemResult(False, self._timeout_message(), TIMEOUT)
            return ItemResult(True, value, OK)
        except _InlineTimeout:
            return ItemResult(False, self._timeout_message(), TIMEOUT)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            return ItemResult(False, format_exception(exc), TIMEOUT if isinstance(exc, ScoreTimeout) else ERROR)

    def _timeout_message(self) -> str:
        return f"timeout after {self.timeout_s:g}s"

    # workers -----------------------------------------------------------------------------------------------

    def _map_workers(self, fn, items) -> list[ItemResult]:
        try:
            fn_blob = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"fn must be picklable to run in worker processes (use a module-level function "
                            f"or a bound method of a picklable object): {format_exception(exc)}") from exc
        if fn_blob != self._fn_blob:
            self._fn_blob, self._fn_key = fn_blob, self._fn_key + 1
        fn_key, timeout = self._fn_key, self.timeout_s

        n = len(items)
        results: list[ItemResult | None] = [None] * n
        blobs: list[bytes | None] = [None] * n
        for i, args in enumerate(items):
            try:
                blobs[i] = pickle.dumps(tuple(args), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001
                results[i] = ItemResult(False, f"item not picklable: {format_exception(exc)}", ERROR)
        queue = collections.deque(i for i in range(n) if results[i] is None)
        remaining = len(queue)

        ws = self._workers
        assert ws is not None
        for slot in range(self.num_workers):
            if ws.slots[slot] is None:
                ws.start(slot)

        def resolve(i: int, res: ItemResult) -> None:
            nonlocal remaining
            if results[i] is None:
                results[i] = res
                remaining -= 1

        def drain(w: _Worker) -> bool:
            """Read every message already in w's pipe; False once the pipe is closed (the worker is gone)."""
            try:
                while w.conn.poll():
                    for idx, ok, status, payload in pickle.loads(w.conn.recv_bytes()):
                        if idx == _READY:
                            w.ready = True
                            self._start_failures = 0
                            continue
                        if w.pending and w.pending[0] == idx:  # results come back in the order sent
                            w.pending.popleft()
                        try:
                            value = pickle.loads(payload)
                        except Exception as exc:  # noqa: BLE001 - e.g. a class the parent cannot import
                            ok, status, value = False, ERROR, f"result not loadable: {format_exception(exc)}"
                        resolve(idx, ItemResult(ok, value, status))
            except (EOFError, OSError):
                return False
            return True

        def retire(w: _Worker, status: str | None, message: str) -> None:
            """w is dead (killed or not). Blame the item it was running (``status`` None: blame none),
            re-queue the others it held, start a replacement."""
            nonlocal chunk_cap
            drain(w)
            if not w.ready:
                self._start_failures += 1
            if w.pending and status is not None:
                chunk_cap = 1  # slow or crashing inputs tend to come in groups: stop batching them together
                # the process is gone, so the clock is final; between two items (or while loading fn), blame
                # the next item, so that a worker that always dies cannot make us loop forever
                running = int(ws.clock[2 * w.slot + 1]) if ws.clock[2 * w.slot] > 0 else w.pending[0]
                if running in w.pending:
                    w.pending.remove(running)
                    resolve(running, ItemResult(False, message, status))
            queue.extendleft(reversed(w.pending))  # never started or finished but unreported: run again
            w.pending.clear()
            ws.stop(w, graceful=False)
            if self._start_failures >= _MAX_START_FAILURES:
                raise RuntimeError(
                    f"reward workers keep dying before they start ({message}); with the 'spawn' start "
                    f"method the main module must be importable and guard its entry point with "
                    f"`if __name__ == '__main__':`")
            ws.start(w.slot)

        chunk_cap = self.max_chunk
        while remaining > 0:
            # hand a chunk to every idle worker; the chunk shrinks as the queue drains
            for w in list(ws.slots):
                if w is None or not w.ready or w.pending or not queue:
                    continue
                size = min(chunk_cap, len(queue), max(1, len(queue) // (2 * self.num_workers)))
                chunk = [queue.popleft() for _ in range(size)]
                try:
                    w.conn.send((fn_key, fn_blob if w.fn_key != fn_key else None,
                                 [(i, blobs[i]) for i in chunk]))
                except (OSError, ValueError):  # it died: its sentinel is noticed below
                    queue.extendleft(reversed(chunk))
                    continue
                w.fn_key = fn_key
                w.pending.extend(chunk)

            # sleep until a message arrives, a worker dies, or the earliest running item runs out of time;
            # a worker between two items, or still unpickling one (its start time lies in the future), says
            # nothing when the item starts, so look again after a short tick
            live = [w for w in ws.slots if w is not None]
            now = time.monotonic()
            wait_s = None
            for w in live:
                if w.pending and timeout is not None:
                    started = ws.clock[2 * w.slot]
                    left = started + timeout - now if 0 < started <= now else min(0.05, timeout / 10)
                elif not w.ready:
                    left = w.born + _START_TIMEOUT_S - now
                else:
                    continue
                wait_s = left if wait_s is None else min(wait_s, left)
            handles = [w.conn for w in live] + [w.proc.sentinel for w in live]
            multiprocessing.connection.wait(handles, timeout=None if wait_s is None else max(0.0, wait_s))

            now = time.monotonic()
            for w in live:
                if not drain(w) or not w.proc.is_alive():
                    w.proc.join(timeout=1.0)
                    code = w.proc.exitcode
                    why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    retire(w, ERROR, f"worker died ({why}) while running this item" if w.ready
                           else f"worker died during start-up ({why})")
                elif not w.ready and now - w.born > _START_TIMEOUT_S:
                    w.proc.kill()
                    retire(w, None, f"worker did not start within {_START_TIMEOUT_S:g}s")
                elif w.pending and timeout is not None:
                    started = ws.clock[2 * w.slot]
                    if started > 0 and now - started > timeout:
                        w.proc.kill()
                        w.proc.join()
                        # If the slow item finished just before the kill, the clock now shows no item or the
                        # next one, which is innocent: blame nobody and re-queue everything.
                        final = ws.clock[2 * w.slot]
                        guilty = final > 0 and now - final > timeout
                        retire(w, TIMEOUT if guilty else None, self._timeout_message())
        return results  # type: ignore[return-value]
