"""The sandbox: every adversarial program is contained, scores 0, and the next run works; limits hold on both
backends (bubblewrap where installed, plain processes everywhere)."""
from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import pytest

from steprl.rewards import RewardPipeline
from steprl.rewards.sandbox import Sandbox, SandboxLimits, bwrap_available
from steprl.tasks.code import CodeTask

BACKENDS = ["process", pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_available(),
                                                                        reason="bubblewrap not installed"))]
LIMITS = {"wall_timeout_s": 2.5, "cpu_time_s": 2, "memory_mb": 512, "file_size_mb": 1,
          "max_output_bytes": 64 * 1024, "nproc": 32}


def make_task(backend: str, tmp_path, rows: list[dict]) -> CodeTask:
    import json
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return CodeTask(val_path=str(path), sandbox={"backend": backend, "limits": LIMITS}, test_timeout_s=1.0)


# each adversarial body would pass `assert f() == 1` if it were not contained
SECRET = "steprl-secret-4f1c"
ADVERSARIAL = {
    "infinite_loop": "    while True:\n        pass\n    return 1\n",
    "sleep_forever": "    import time\n    time.sleep(1000)\n    return 1\n",
    "fork_bomb": "    import os\n    while True:\n        os.fork()\n    return 1\n",
    "memory_hog": "    x = bytearray(8 << 30)\n    return 1\n",
    "huge_output": "    import sys, os\n    while True:\n        os.write(1, b'x' * 65536)\n    return 1\n",
    "huge_print": "    while True:\n        print('y' * 100000)\n    return 1\n",
    "write_outside": "    open(OUTSIDE, 'w').write('pwned')\n    return 1\n",
    "huge_file": "    open('big.bin', 'wb').write(b'0' * (64 << 20))\n    return 1\n",
    "network": "    import socket\n    s = socket.create_connection(('127.0.0.1', PORT), timeout=2)\n    s.sendall(b'hi')\n    return 1\n",
    "parent_env": "    import os\n    return 1 if os.environ.get('STEPRL_SECRET') == SECRET else 0\n",
    "parent_environ_file": "    import os\n    data = open('/proc/%d/environ' % os.getppid(), 'rb').read()\n"
                           "    return 1 if SECRET.encode() in data else 0\n",
    "kill_parent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n",
    "ctypes_escape": "    import ctypes\n    ctypes.CDLL(None).system(b'true')\n    return 1\n",
    "exit_early": "    raise SystemExit(0)\n",
    "syntax_error": "    return (1\n",
}


@pytest.fixture(scope="module")
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(conn.recv(16))
                conn.close()
            except OSError:
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_adversarial_programs_are_contained(backend, tmp_path, listener, monkeypatch):
    port, hits = listener
    outside = tmp_path / "outside.txt"
    monkeypatch.setenv("STEPRL_SECRET", SECRET)
    prelude = f"OUTSIDE = {str(outside)!r}\nPORT = {port}\nSECRET = {SECRET!r}\n"
    rows = [{"task_id": name, "prompt": prelude + "def f():\n", "entry_point": "f",
             "test": "def check(candidate):\n    assert candidate() == 1\n"} for name in ADVERSARIAL]
    rows.append({"task_id": "honest", "prompt": prelude + "def f():\n", "entry_point": "f",
                 "test": "def check(candidate):\n    assert candidate() == 1\n"})
    task = make_task(backend, tmp_path, rows)
    samples = task.val_dataset()
    scratch_root = tmp_path / "scratch"  # this test's scratch dirs only (other processes may run sandboxes too)
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    for i, (name, body) in enumerate(ADVERSARIAL.items()):
        t0 = time.monotonic()
        res = task.run(samples[i], body)  # what verify() returns as the reward: res.score
        assert res.score == 0.0, (name, res)
        assert time.monotonic() - t0 < 30, name
    # the machine is fine and the next program runs normally
    assert task.verify(samples[len(ADVERSARIAL)], "    return 1\n") == 1.0
    assert not outside.exists()
    assert hits == []
    assert os.listdir(scratch_root) == []  # every scratch dir was deleted


@pytest.mark.parametrize("backend", BACKENDS)
def test_limits_and_statuses(backend):
    sb = Sandbox(dict(LIMITS, wall_timeout_s=2.0), backend=backend)
    assert sb.run("print('hi', __payload__['x'])", {"x": 3}).stdout == "hi 3\n"
    assert sb.run("print(input()[::-1])", stdin="abc\n").stdout == "cba\n"
    assert sb.run("while True: pass").status == "timeout"
    r = sb.run("import sys\nwhile True: sys.stdout.write('x' * 4096)")
    assert r.status == "output_limit" and len(r.stdout) <= LIMITS["max_output_bytes"]
    r = sb.run("x = bytearray(2 << 30)")
    assert r.status == "error" and "MemoryError" in r.stderr
    r = sb.run("open('f', 'wb').write(b'0' * (4 << 20))")
    assert r.status in ("file_limit", "error")
    r = sb.run("import os; print(sorted(os.environ))")
    assert r.ok and "STEPRL" not in r.stdout and "PYTHONPATH" not in r.stdout
    r = sb.run("import os; print(os.getcwd()); open('f.txt', 'w').write('ok'); print(open('f.txt').read())")
    assert r.ok and r.stdout.endswith("ok\n") and "steprl-sbx-" in r.stdout
    assert r.backend == backend


@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not installed")
def test_bwrap_layer_holds_without_the_audit_hook(listener):
    """A child process started from the sandbox has no audit hook; bubblewrap's namespaces still stop it."""
    port, hits = listener
    sb = Sandbox(dict(LIMITS, allow_subprocess=True, nproc=16), backend="bwrap")
    code = ("import subprocess, sys\n"
            f"print(subprocess.run([sys.executable, '-c', 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)'],"
            " capture_output=True).returncode)")
    r = sb.run(code)
    assert r.ok and r.stdout.strip() != "0", r
    r = sb.run("import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', "
               "'open(\"/etc/steprl_pwned\", \"w\")'], capture_output=True).returncode)")
    assert r.ok and r.stdout.strip() != "0" and not os.path.exists("/etc/steprl_pwned")
    if os.geteuid() == 0:  # runs as nobody: RLIMIT_NPROC binds, the fork bomb stops and is killed
        t0 = time.monotonic()
        r = sb.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
        assert r.status == "timeout" and time.monotonic() - t0 < 20
        assert r.extras["uid"] == 65534
    assert hits == []


def test_pipeline_keeps_scoring_after_adversarial_responses(tmp_path):
    rows = [{"task_id": "p", "prompt": "def f(x):\n", "entry_point": "f",
             "tests": ["assert f(1) == 2", "assert f(2) == 3", "assert f(0) == 1"]}]
    task = make_task("auto", tmp_path, rows)
    s = task.val_dataset()[0]
    responses = ["    return x + 1\n", "    while True: pass\n", "garbage ```", None, "    return 2\n",
                 "```python\ndef f(x):\n    return x + 1\n```"]
    with RewardPipeline(task.verify, num_workers=0, timeout_s=30) as pipe:
        res = pipe([s] * len(responses), responses)
    assert res.outcome.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 1 / 3, 1.0])
    assert res.errors == 0 and res.timeouts == 0


def test_limits_are_validated():
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ValueError, match="backend"):
        Sandbox(backend="docker")
