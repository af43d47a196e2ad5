"""The sandbox: every adversarial program is contained, scores 0, and the next run works; limits hold on both
backends (bubblewrap where installed, plain processes everywhere)."""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time

import pytest

from steprl.rewards import RewardPipeline
from steprl.rewards.sandbox import Sandbox, SandboxLimits, _world_accessible, bwrap_available
from steprl.tasks.code import CodeTask

# as root, the process backend runs code as `nobody`, who must be able to read the interpreter
PROCESS_PYTHON = next((p for p in (getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3")
                       if os.path.exists(p) and (os.geteuid() != 0 or _world_accessible(p))), None)
BACKENDS = [pytest.param("process", marks=pytest.mark.skipif(PROCESS_PYTHON is None,
                                                             reason="no interpreter user nobody can read")),
            pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_available(), reason="bubblewrap not installed"))]
LIMITS = {"wall_timeout_s": 2.5, "cpu_time_s": 2, "memory_mb": 512, "file_size_mb": 1,
          "max_output_bytes": 64 * 1024, "nproc": 32}


def sandbox_kw(backend: str) -> dict:
    """The weak backend needs the explicit opt-in (and, as root, an interpreter `nobody` can read)."""
    if backend == "process":
        return {"backend": "process", "allow_weak_isolation": True, "python": PROCESS_PYTHON}
    return {"backend": backend}


def make_task(backend: str, tmp_path, rows: list[dict]) -> CodeTask:
    import json
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return CodeTask(val_path=str(path), sandbox=dict(sandbox_kw(backend), limits=LIMITS), test_timeout_s=1.0)


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


@pytest.fixture
def open_dir():
    """A directory every user can reach and write (pytest's tmp_path is root-only, which would stop `nobody`
    for the wrong reason): attacks must be stopped by the sandbox, not by this directory's permissions."""
    import shutil
    from pathlib import Path
    d = Path(tempfile.mkdtemp(prefix="steprl-attack-", dir="/tmp" if os.path.isdir("/tmp") else None))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


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
def test_adversarial_programs_are_contained(backend, tmp_path, listener, monkeypatch, open_dir):
    port, hits = listener
    outside = open_dir / "outside.txt"
    monkeypatch.setenv("STEPRL_SECRET", SECRET)
    prelude = f"OUTSIDE = {str(outside)!r}\nPORT = {port}\nSECRET = {SECRET!r}\n"
    rows = [{"task_id": name, "prompt": prelude + "def f():\n", "entry_point": "f",
             "test": "def check(candidate):\n    assert candidate() == 1\n"} for name in ADVERSARIAL]
    rows.append({"task_id": "honest", "prompt": prelude + "def f():\n", "entry_point": "f",
                 "test": "def check(candidate):\n    assert candidate() == 1\n"})
    task = make_task(backend, tmp_path, rows)
    samples = task.val_dataset()
    scratch_root = open_dir / "scratch"  # this test's scratch dirs only (other processes may run sandboxes too)
    scratch_root.mkdir()
    scratch_root.chmod(0o755)
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
    # every scratch dir was deleted (what remains is this process's empty scratch root)
    assert all(os.listdir(scratch_root / d) == [] for d in os.listdir(scratch_root))


@pytest.mark.parametrize("backend", BACKENDS)
def test_limits_and_statuses(backend):
    sb = Sandbox(dict(LIMITS, wall_timeout_s=2.0), **sandbox_kw(backend))
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
    # issue 17, 4: without the hook, the answer key and the checkout do not even exist inside
    here = os.path.abspath(__file__)
    key = os.path.realpath(os.path.join(os.path.dirname(here), "..", "..", "..", "..", "shared", "data",
                                        "humaneval.jsonl.gz"))
    for target in (key, here):
        child = f"import os; print(os.path.exists({target!r}))"
        r = sb.run(f"import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', {child!r}], "
                   "capture_output=True, text=True).stdout)")
        assert r.ok and r.stdout.strip() == "False", (target, r)
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


# ---------------------------------------------------------------------------------------------------------------
# attacks of issue 17: ways past the audit hook, forged verdicts, reading the answer key, scratch space.
# Every attack is bounded (a few processes, a few seconds, 127.0.0.1 only, files in tmp_path) and cleans up.
# ---------------------------------------------------------------------------------------------------------------
import signal
import subprocess
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
ANSWER_KEY = (REPO.parent / "shared" / "data" / "humaneval.jsonl.gz").resolve()


def attack_task(backend: str, tmp_path, n_tests: int = 3) -> CodeTask:
    import json
    rows = [{"task_id": "a", "prompt": "def f():\n", "entry_point": "f",
             "test": "def check(candidate):\n" + "".join(f"    assert candidate() == {1}\n" for _ in range(n_tests))}]
    path = tmp_path / "attack_rows.jsonl"
    path.write_text(json.dumps(rows[0]))
    return CodeTask(val_path=str(path), sandbox=dict(sandbox_kw(backend), limits=LIMITS), test_timeout_s=1.0)


def survivors(marker: str) -> list[int]:
    """Pids of processes whose command line holds ``marker`` (an escaped child outliving the run)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{p}/cmdline").read_bytes():
                    out.append(int(p))
            except OSError:
                pass
    return out


@pytest.fixture
def victim():
    """A sacrificial process standing in for the training process (attacks try to kill it). It runs as the user
    the sandboxed code runs as (`nobody` when root), so that file permissions alone would not save it."""
    who = {"user": 65534, "group": 65534} if os.geteuid() == 0 else {}
    p = subprocess.Popen(["sleep", "60"], **who)
    yield p.pid
    p.kill()
    p.wait()


@pytest.mark.parametrize("backend", BACKENDS)
def test_spawnv_passfds_child_gets_nowhere(backend, tmp_path, listener, victim, open_dir):
    """Issue 17, 1a: `multiprocessing.util.spawnv_passfds` reaches `_posixsubprocess.fork_exec` (no audit event):
    its child must not connect, write outside, kill another process, multiply, or outlive the call."""
    port, hits = listener
    outside = open_dir / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    marker = f"steprl-attack-{uuid.uuid4().hex}"
    child = (f"import os, socket, time, signal\n"
             f"try:\n    open({str(outside / 'from_child')!r}, 'w').write('x')\nexcept OSError: pass\n"
             f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'esc')\nexcept OSError: pass\n"
             f"try:\n    os.kill({victim}, signal.SIGKILL)\nexcept OSError: pass\n"
             f"time.sleep(8)  # {marker}\n")
    body = ("    import multiprocessing.util as u, sys\n    n = 0\n"
            "    for _ in range(6):\n        try:\n"
            f"            x = sys.executable.encode()\n"
            f"            u.spawnv_passfds(x, [x, b'-c', {child.encode()!r}], [])\n"
            "            n += 1\n        except Exception:\n            pass\n"
            "    import time\n    time.sleep(0.5)\n    return 1 if n else 0\n")
    task = attack_task(backend, tmp_path)
    try:
        res = task.run(task.val_dataset()[0], body)
        time.sleep(0.5)
        left = survivors(marker)
        assert left == [], "processes outlived the sandboxed run"
        assert res.score == 0.0, res
        assert not (outside / "from_child").exists()
        assert hits == []
        os.kill(victim, 0)  # still alive
    finally:
        for pid in survivors(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_process_creation_or_signals_past_the_hook(backend, victim):
    """Issue 17, 1a: the other unaudited ways to start or signal a process (a pidfd) fail."""
    sb = Sandbox(LIMITS, **sandbox_kw(backend))
    code = ("import os, signal, _posixsubprocess\nok = []\n"
            "try:\n    signal.pidfd_send_signal(os.pidfd_open(%d), signal.SIGKILL); ok.append('pidfd')\n"
            "except Exception: pass\n"
            "try:\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    ok.append('fork')\n"
            "except Exception: pass\n"
            "print(ok)\n" % victim)
    r = sb.run(code)
    assert r.stdout.strip() == "[]", r
    os.kill(victim, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dir_fd_does_not_get_past_the_path_checks(backend, monkeypatch, open_dir):
    """Issue 17, 1b: `dir_fd` / `src_dir_fd` / `dst_dir_fd` relative to a directory outside the scratch dir."""
    outside = open_dir / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    for name in ("victim.txt", "victim2.txt"):
        (outside / name).write_text("keep")
        (outside / name).chmod(0o666)
    monkeypatch.setenv("STEPRL_SECRET", SECRET)
    sb = Sandbox(LIMITS, **sandbox_kw(backend))
    attacks = {
        "create": "fd = os.open('created', os.O_CREAT | os.O_WRONLY, dir_fd=d); os.write(fd, b'x')",
        "remove": "os.remove('victim.txt', dir_fd=d)",
        "rename": "os.rename('victim2.txt', 'renamed.txt', src_dir_fd=d, dst_dir_fd=d)",
        "mkdir": "os.mkdir('made', dir_fd=d)",
    }
    for name, stmt in attacks.items():
        r = sb.run(f"import os\nd = os.open({str(outside)!r}, os.O_RDONLY)\n{stmt}\nprint('done')")
        assert "done" not in r.stdout, (name, r)
    assert sorted(os.listdir(outside)) == ["victim.txt", "victim2.txt"]
    # /proc through a directory fd: look for the secret in any process's environment
    r = sb.run("import os\nd = os.open('/proc', os.O_RDONLY)\nfound = False\n"
               "for p in os.listdir(d)[:5000]:\n    if p.isdigit():\n        try:\n"
               "            fd = os.open(p + '/environ', os.O_RDONLY, dir_fd=d)\n"
               f"            found = found or {SECRET.encode()!r} in os.read(fd, 1 << 20)\n"
               "        except OSError:\n            pass\nprint(found)")
    assert r.stdout.strip() != "True", r


@pytest.mark.parametrize("backend", BACKENDS)
def test_forged_verdicts_score_nothing(backend, tmp_path):
    """Issue 17, 3: a program must not be able to report passes, nor pass `==` with an object of its own."""
    task = attack_task(backend, tmp_path, n_tests=3)
    s = task.val_dataset()[0]
    forgeries = {
        "report_function": "    g = globals()\n    for k in list(g):\n        if 'report' in k:\n"
                           "            for i in range(3):\n                g[k](i, True)\n"
                           "    import os\n    os._exit(0)\n",
        "frame_nonce": "    import sys, os\n    f = sys._getframe()\n    while f is not None:\n"
                       "        for v in list(f.f_locals.values()):\n"
                       "            if isinstance(v, dict) and 'nonce' in v:\n"
                       "                for i in range(3):\n"
                       "                    os.write(1, ('%s %d 1\\n' % (v['nonce'], i)).encode())\n"
                       "                os._exit(0)\n        f = f.f_back\n    return 0\n",
        "eq_always_true": "    class A:\n        def __eq__(self, other):\n            return True\n    return A()\n",
        "int_subclass_eq": "    class I(int):\n        def __eq__(self, other):\n            return True\n"
                           "        __hash__ = int.__hash__\n    return I(7)\n",
        "patch_builtins": "    import builtins\n    builtins.AssertionError = type('X', (BaseException,), {})\n"
                          "    return 0\n",
    }
    for name, body in forgeries.items():
        res = task.run(s, body)
        assert res.score == 0.0, (name, res)
    assert task.run(s, "    return 1\n").score == 1.0
    # the tests' own helpers: a builtin, a standard module, and a helper the prompt defines (HumanEval/32's `poly`)
    import json
    row = {"task_id": "h", "entry_point": "f", "prompt": "import math\n\ndef helper(x):\n    return x * 2\n\n\ndef f():\n",
           "test": "def check(candidate):\n    assert helper(candidate()) == 2\n    assert abs(candidate() - 1) < 1e-9\n"
                   "    assert math.floor(candidate()) == 1\n"}
    path = tmp_path / "helper_rows.jsonl"
    path.write_text(json.dumps(row))
    task = CodeTask(val_path=str(path), sandbox=dict(sandbox_kw(backend), limits=LIMITS), test_timeout_s=1.0)
    s = task.val_dataset()[0]
    shadow = ("```python\nimport math\n\nclass _M:\n    def floor(self, x):\n        return 1\n\nmath = _M()\n\n"
              "def helper(x):\n    return 2\n\ndef abs(x):\n    return 0\n\ndef f():\n    return 5\n```")
    assert task.run(s, shadow).score == 0.0
    assert task.run(s, "    return 1\n").score == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_program_cannot_read_the_answer_key_or_the_checkout(backend, tmp_path):
    """Issue 17, 4: the answer key, the checkout and the run store are not readable, under either backend."""
    store = REPO / "outputs" / "mlflow.db"
    targets = [str(REPO / "pyproject.toml"), str(REPO / "src" / "steprl" / "tasks" / "code.py"), str(store)]
    if ANSWER_KEY.is_file():
        targets.append(str(ANSWER_KEY))
    sb = Sandbox(LIMITS, **sandbox_kw(backend))
    for t in targets:
        r = sb.run(f"try:\n    print(len(open({t!r}, 'rb').read()))\nexcept OSError as e:\n    print('refused')")
        assert r.stdout.strip() in ("refused", ""), (t, r)
    r = sb.run(f"import os\ntry:\n    print(os.listdir({str(REPO)!r}))\nexcept OSError:\n    print('refused')")
    assert r.stdout.strip() in ("refused", ""), r


@pytest.mark.parametrize("backend", BACKENDS)
def test_program_never_runs_as_root(backend):
    """Issue 17, 2: with or without bubblewrap the program runs as an unprivileged user."""
    r = Sandbox(LIMITS, **sandbox_kw(backend)).run("import os; print(os.geteuid(), os.getegid())")
    assert r.ok, r
    uid, gid = map(int, r.stdout.split())
    assert uid != 0 and gid != 0


def test_auto_without_bubblewrap_refuses_unless_weak_isolation_is_allowed(monkeypatch, tmp_path):
    """Issue 17, 2: where bubblewrap is missing, `auto` refuses to run code unless the weak backend is opted into."""
    from steprl.rewards import sandbox as sbx
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    monkeypatch.setattr(sbx, "_BWRAP_STATE", {})  # probe again, on this PATH
    monkeypatch.setattr(sbx, "_CHECKED", {})
    with pytest.raises(RuntimeError, match="allow_weak_isolation"):
        Sandbox(LIMITS, backend="auto").run("print(1)")
    with pytest.raises(RuntimeError, match="allow_weak_isolation"):
        CodeTask(path="synthetic", num_synthetic=4, sandbox={"backend": "auto"})  # at start-up, not at step 1
    if PROCESS_PYTHON is None:
        pytest.skip("no interpreter user nobody can read")
    r = Sandbox(LIMITS, backend="auto", allow_weak_isolation=True, python=PROCESS_PYTHON).run("print(1)")
    assert r.ok and r.backend == "process" and r.stdout == "1\n"


@pytest.mark.skipif(PROCESS_PYTHON is None, reason="no interpreter user nobody can read")
def test_process_backend_caps_scratch_size(monkeypatch, open_dir):
    """Issue 17, 5: many files each under RLIMIT_FSIZE must not fill the disk."""
    monkeypatch.setattr(tempfile, "tempdir", str(open_dir))
    sb = Sandbox(dict(LIMITS, scratch_mb=4, wall_timeout_s=10, cpu_time_s=8), **sandbox_kw("process"))
    r = sb.run("import time\nfor i in range(24):\n    open('f%d' % i, 'wb').write(b'0' * (1 << 20))\n"
               "    time.sleep(0.05)\nprint('wrote all')")
    assert "wrote all" not in r.stdout and r.status == "scratch_limit", r


@pytest.mark.skipif(PROCESS_PYTHON is None, reason="no interpreter user nobody can read")
def test_scratch_of_a_killed_caller_is_swept(monkeypatch, open_dir):
    """Issue 17, 5: a caller killed mid-run leaves its scratch dir; the next sandbox user removes it."""
    tmp_path = open_dir
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO / "src"))
    code = ("from steprl.rewards.sandbox import Sandbox\n"
            f"Sandbox({LIMITS!r}, **{sandbox_kw('process')!r}).run('import time; time.sleep(30)')")
    caller = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any("sbx" in p for p in os.listdir(tmp_path)):
        time.sleep(0.1)
    time.sleep(0.5)
    caller.kill()
    caller.wait()
    left = [p for p in os.listdir(tmp_path) if "sbx" in p]
    assert left, "the killed caller made no scratch dir"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert Sandbox(LIMITS, **sandbox_kw("process")).run("print(1)").ok
    # only this process's own (empty) scratch root may remain
    assert all(str(os.getpid()) in p for p in os.listdir(tmp_path) if "sbx" in p), os.listdir(tmp_path)
