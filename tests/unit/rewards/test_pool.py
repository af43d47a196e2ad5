"""BoundedPool: one result per item in order, per-item time budgets, and recovery from hangs and crashes."""
from __future__ import annotations

import copy
import gc
import multiprocessing
import os
import pickle
import random
import signal
import threading
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steprl.rewards.pool import BoundedPool, ItemResult
from tests.unit.rewards import verifiers as V

pytestmark = pytest.mark.timeout(60)

# The Math-Verify #65 input: parse() never returns, and its own signal-based parsing_timeout cannot stop it
# (the time goes into one huge integer power inside C code).
MATH_VERIFY_HANG = r"\boxed{\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)} - 4\right)} - 5}{16}}"


def statuses(results):
    return [r.status for r in results]


def gone(pid: int) -> bool:
    """The process no longer exists as our child, not even as a zombie."""
    try:
        return psutil.Process(pid).ppid() != os.getpid()
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def pool():
    """A shared 2-worker pool; tests that kill workers also check that it keeps working."""
    with BoundedPool(num_workers=2, timeout_s=1.0) as p:
        p.map(V.add, [(0, 0)])  # start the workers outside the timed parts
        yield p


# ------------------------------------------------------------------------------------------------ basics

def test_order_is_kept_with_mixed_durations(pool):
    rng = random.Random(0)
    items = [(rng.choice([0.0, 0.0, 0.001, 0.02]), i) for i in range(60)]
    results = pool.map(V.sleep_then, items)
    assert [r.value for r in results] == list(range(60))
    assert all(r == ItemResult(True, r.value, "ok") for r in results)


def test_empty_and_results_are_tuples(pool):
    assert pool.map(V.add, []) == []
    ok, value, status = pool.map(V.add, [(2, 3)])[0]
    assert (ok, value, status) == (True, 5, "ok")


def test_exception_becomes_error_with_last_traceback_line(pool):
    (res,) = pool.map(V.raise_value_error, [()])
    assert not res.ok and res.status == "error"
    assert res.value.startswith("ValueError: boom") and "verifiers.py" in res.value


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["ok", "ok", "ok", "raise", "exit"]), min_size=1, max_size=12))
def test_any_mix_of_ok_raise_and_exit_gives_one_result_each_in_order(pool, kinds):
    results = pool.map(V.behave, [(k,) for k in kinds])
    expected = {"ok": "ok", "raise": "error", "exit": "error"}
    assert statuses(results) == [expected[k] for k in kinds]
    assert all(r.value == 1.0 for r, k in zip(results, kinds) if k == "ok")


# ---------------------------------------------------------------------------------------------- timeouts

def test_infinite_loops_time_out_in_parallel_and_the_pool_keeps_working():
    timeout = 1.0
    with BoundedPool(num_workers=2, timeout_s=timeout) as p:
        p.map(V.add, [(0, 0)])
        items = [("ok",)] * 3 + [("spin",)] + [("ok",)] * 3 + [("spin",)] + [("ok",)] * 3
        t0 = time.monotonic()
        results = p.map(V.behave, items)
        elapsed = time.monotonic() - t0
        assert statuses(results) == ["timeout" if k == ("spin",) else "ok" for k in items]
        assert all(r.value == 1.0 for r in results if r.ok)
        assert "timeout" in results[3].value
        # both loops were killed side by side: about one timeout, not two
        assert timeout <= elapsed < 1.8 * timeout, elapsed
        assert statuses(p.map(V.add, [(1, 1), (2, 2)])) == ["ok", "ok"]


def test_budget_counts_from_when_a_worker_starts_the_item_not_from_submission():
    # one worker, four 0.3 s items, 0.5 s budget: the call takes 1.2 s and nothing times out
    with BoundedPool(num_workers=1, timeout_s=0.5) as p:
        t0 = time.monotonic()
        results = p.map(V.sleep_then, [(0.3, i) for i in range(4)])
        assert time.monotonic() - t0 >= 1.2
        assert [r.value for r in results] == [0, 1, 2, 3]


def test_a_hang_inside_a_chunk_does_not_cost_the_other_items_of_the_chunk():
    # one worker and large chunks: the items around the loop share its chunk; they must all still be
    # answered (finished ones kept or re-run, unstarted ones re-queued), and only the loop times out
    with BoundedPool(num_workers=1, timeout_s=0.5, max_chunk=64) as p:
        items = [(0.0, i) for i in range(30)] + [(30.0, "slow")] + [(0.0, i) for i in range(31, 60)]
        results = p.map(V.sleep_then, items)
        assert statuses(results) == ["ok"] * 30 + ["timeout"] + ["ok"] * 29
        assert [r.value for r in results[:30]] == list(range(30))
        assert [r.value for r in results[31:]] == list(range(31, 60))


def test_math_verify_hang_is_killed():
    """Math-Verify #65: this input makes parse() hang, and its own parsing_timeout cannot stop it."""
    pytest.importorskip("math_verify")
    from tests.unit.rewards.math_verifiers import math_verify_parse

    with BoundedPool(num_workers=1, timeout_s=1.5) as p:
        results = p.map(math_verify_parse, [(r"\boxed{2}",), (MATH_VERIFY_HANG,), (r"\boxed{\frac{1}{2}}",)])
        assert statuses(results) == ["ok", "timeout", "ok"]
        assert "2" in results[0].value and "1/2" in results[2].value


# ------------------------------------------------------------------------------------------ dying workers

def test_worker_that_exits_is_an_error_and_is_replaced(pool):
    before = set(pool.worker_pids)
    results = pool.map(V.behave, [("ok",), ("exit",), ("ok",)])
    assert statuses(results) == ["ok", "error", "ok"]
    assert "worker died (exit code 1)" in results[1].value
    after = set(pool.worker_pids)
    assert len(after) == 2 and after != before
    assert all(gone(pid) for pid in before - after)
    assert statuses(pool.map(V.add, [(1, 2)] * 5)) == ["ok"] * 5


def test_segfault_is_an_error(pool):
    results = pool.map(V.segfault, [()])
    assert statuses(results) == ["error"]
    assert f"signal {int(signal.SIGSEGV)}" in results[0].value
    assert pool.map(V.add, [(1, 2)])[0].value == 3


def test_unpicklable_item_or_result_fails_only_that_item(pool):
    results = pool.map(V.add, [(1, 2), (threading.Lock(), 1), (3, 4)])
    assert statuses(results) == ["ok", "error", "ok"]
    assert "not picklable" in results[1].value
    (res,) = pool.map(V.unpicklable_result, [()])
    assert res.status == "error" and "not picklable" in res.value


def test_unpicklable_fn_is_a_usage_error(pool):
    with pytest.raises(TypeError, match="picklable"):
        pool.map(lambda: 1, [()])


def test_an_interrupted_call_leaves_no_stale_answers_for_the_next_one():
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    with BoundedPool(num_workers=2, timeout_s=5.0, max_chunk=1) as p:
        p.map(V.add, [(0, 0)])
        previous = signal.signal(signal.SIGALRM, interrupt)
        outer_timer = signal.setitimer(signal.ITIMER_REAL, 0.3)[0]  # pytest-timeout's, if any
        try:
            with pytest.raises(KeyboardInterrupt):
                p.map(V.sleep_then, [(0.6, f"old {i}") for i in range(6)])
        finally:
            signal.signal(signal.SIGALRM, previous)
            if outer_timer > 0:
                signal.setitimer(signal.ITIMER_REAL, outer_timer)
        results = p.map(V.sleep_then, [(0.0, f"new {i}") for i in range(6)])
        assert [r.value for r in results] == [f"new {i}" for i in range(6)]


# ----------------------------------------------------------------------------------------------- inline

def test_inline_runs_in_process_and_turns_exceptions_into_errors():
    with BoundedPool(num_workers=0, timeout_s=1.0) as p:
        results = p.map(V.behave, [("ok",), ("raise",), ("ok",)])
        assert statuses(results) == ["ok", "error", "ok"]
        assert "ValueError: boom" in results[1].value
        assert p.worker_pids == []


def test_inline_timeout_in_main_thread_and_handler_restored():
    assert threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGALRM)
    outer_timer = signal.getitimer(signal.ITIMER_REAL)[0]
    with BoundedPool(num_workers=0, timeout_s=0.3) as p:
        t0 = time.monotonic()
        results = p.map(V.behave, [("spin",), ("ok",)])
        assert time.monotonic() - t0 < 1.5
        assert statuses(results) == ["timeout", "ok"]
        # a verifier that swallows the timeout exception and returns is still reported as a timeout
        assert statuses(p.map(V.swallow_timeout_and_sleep, [(1.0,)])) == ["timeout"]
    # the previous handler is back, and a timer that was already running (pytest-timeout's) is re-armed
    assert signal.getsignal(signal.SIGALRM) is previous
    if outer_timer > 0:
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= outer_timer
    else:
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_inline_timeout_is_not_enforced_outside_the_main_thread():
    out = []
    with BoundedPool(num_workers=0, timeout_s=0.05) as p:
        t = threading.Thread(target=lambda: out.extend(p.map(V.sleep_then, [(0.2, "late")])))
        t.start()
        t.join()
    assert out == [ItemResult(True, "late", "ok")]


# ---------------------------------------------------------------------------------------------- lifecycle

def test_close_leaves_no_child_processes():
    p = BoundedPool(num_workers=2, timeout_s=1.0)
    assert p.worker_pids == []  # lazy
    p.map(V.add, [(1, 1)] * 4)
    pids = p.worker_pids
    assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)
    p.close()
    p.close()  # idempotent
    assert all(gone(pid) for pid in pids)
    assert not any(c.pid in pids for c in multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="closed"):
        p.map(V.add, [(1, 1)])


def test_close_after_a_kill_and_garbage_collection_leave_no_children():
    with BoundedPool(num_workers=1, timeout_s=0.3) as p:
        p.map(V.behave, [("spin",)])
        pids = p.worker_pids
    assert all(gone(pid) for pid in pids)

    p = BoundedPool(num_workers=1, timeout_s=1.0)
    p.map(V.add, [(1, 1)])
    pids = p.worker_pids
    del p
    gc.collect()
    assert all(gone(pid) for pid in pids)


def test_copies_get_their_own_workers():
    with BoundedPool(num_workers=1, timeout_s=1.0) as p:
        p.map(V.add, [(1, 1)])
        for clone in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
            assert clone.worker_pids == []
            assert (clone.num_workers, clone.timeout_s) == (1, 1.0)
            assert clone.map(V.add, [(2, 2)])[0].value == 4
            assert set(clone.worker_pids).isdisjoint(p.worker_pids)
            clone.close()


def test_bad_arguments():
    with pytest.raises(ValueError):
        BoundedPool(num_workers=-1, timeout_s=1.0)
    with pytest.raises(ValueError):
        BoundedPool(num_workers=1, timeout_s=0)
