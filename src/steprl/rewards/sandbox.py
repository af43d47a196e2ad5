"""Run untrusted (model-written) Python code in a sandbox.

Every run is a fresh process with, in layers:

* **OS limits** (cannot be undone from Python): ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS`` (address space),
  ``RLIMIT_FSIZE`` (largest file it may write), ``RLIMIT_NPROC`` (processes of its user), ``RLIMIT_NOFILE``,
  no core dumps; a **wall-clock timeout** after which the whole process group (and, with bubblewrap, the
  whole PID namespace) is killed with SIGKILL; **stdout / stderr capped** at ``max_output_bytes`` (the run is
  killed when it writes more); ``PR_SET_PDEATHSIG`` so it dies with the process that started it.
* **A minimal environment**: no variable of the parent's environment is passed (only ``PATH``, ``LANG``,
  ``HOME``/``TMPDIR`` pointing at the scratch directory); the interpreter runs in isolated mode (``-I``).
* **A scratch working directory**, deleted after the run.
* **bubblewrap** (``bwrap``), when it is installed (``backend="auto"``): a read-only view of ``/``, home
  directories (``/root``, ``/home``) hidden, a private ``/tmp``, a size-limited tmpfs as working directory,
  new PID / network / IPC / UTS namespaces (``--unshare-net``: **no network at all**), a fresh ``/proc``
  showing only the sandbox's own processes. When the parent runs as root, the code runs as user ``nobody``
  (uid 65534), so ``RLIMIT_NPROC`` applies (it does not to root) and it owns no file outside the scratch dir.
* **A Python audit hook** (both backends) installed before the code runs: it refuses to create sockets, to
  start processes (fork / exec / spawn / system / subprocess, unless ``allow_subprocess``), to load C
  libraries through ``ctypes``, to send signals to other processes, to open for writing, create, remove,
  rename or chmod any path outside the scratch directory, and to read ``/proc/<pid>`` of other processes.

Without bubblewrap (``backend="process"``) the audit hook is the only network barrier and the only write
barrier besides file permissions: **network isolation and file-system containment are then best effort**
(a program that reaches raw system calls, e.g. through a C extension already installed, gets past the hook).
As root without bubblewrap the code also runs as ``nobody`` when the interpreter is readable by other users;
otherwise it stays root and ``RLIMIT_NPROC`` does not bind (the audit hook still refuses fork / exec).
Install bubblewrap (``apt-get install bubblewrap``) for the real thing.

The code and its input reach the child through its stdin (a deleted temporary file), which the child closes
after reading; a program can therefore not read the test data from disk. What the child reports back to a
harness shares the process with the program it judges: a program written to attack the harness (introspect
its frames, forge its report line) could forge a score. The sandbox protects the machine, not the reward
against deliberate introspection.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "bwrap_available"]

NOBODY = 65534
_HIDDEN_DIRS = ("/root", "/home")

# ---------------------------------------------------------------------------------------------------------------
# the prelude: the first code the child runs (trusted); it reads the job from stdin, locks the process down
# and runs the job's `main` source. Parameters come in argv[1] (JSON); nothing secret is in them.
# ---------------------------------------------------------------------------------------------------------------
PRELUDE = r'''
def _lockdown():
    import io, json, os, resource, sys
    cfg = json.loads(sys.argv[1])
    chunks = []
    while True:
        b = os.read(0, 1 << 20)
        if not b:
            break
        chunks.append(b)
    job = json.loads(b"".join(chunks).decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(cfg["cwd"])

    def lim(name, soft, hard=None):
        try:
            resource.setrlimit(getattr(resource, name), (soft, soft if hard is None else hard))
        except (ValueError, OSError, AttributeError):
            pass
    lim("RLIMIT_CORE", 0)
    lim("RLIMIT_CPU", cfg["cpu"], cfg["cpu"] + 1)
    lim("RLIMIT_FSIZE", cfg["fsize"])
    lim("RLIMIT_NOFILE", cfg["nofile"])
    lim("RLIMIT_NPROC", cfg["nproc"])
    lim("RLIMIT_AS", cfg["mem"])
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    if sys.platform.startswith("linux"):  # after setuid, which clears it
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL
        except Exception:
            pass
        if os.getppid() == 1 and not cfg["pid_ns"]:  # the parent is already gone
            os._exit(137)

    scratch = os.path.realpath(cfg["cwd"])
    allow_sub = bool(cfg["allow_subprocess"])
    me = str(os.getpid())
    realpath, fsdecode, sep, devnull = os.path.realpath, os.fsdecode, os.sep, os.devnull
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    PATH_EVENTS = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
        "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "os.chflags",
        "os.lchflags", "os.setxattr", "os.removexattr", "os.mkfifo", "os.mknod"})
    PROC_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
        "subprocess.Popen", "pty.spawn", "os.startfile"})
    INTROSPECT = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.addaudithook"})

    def inside(p):
        if isinstance(p, int):
            return True
        try:
            p = fsdecode(p)
            if p == devnull:
                return True
            r = realpath(p)
            return r == scratch or r.startswith(scratch + sep)
        except Exception:
            return False

    def proc_other(p):
        if isinstance(p, int):
            return False
        try:
            parts = realpath(fsdecode(p)).split(sep)
        except Exception:
            return True
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != me

    def hook(event, args):
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & WRITE)
            if writing and not inside(path):
                raise PermissionError("sandbox: writing outside the scratch directory is not allowed")
            if proc_other(path):
                raise PermissionError("sandbox: other processes' /proc entries are not readable")
        elif event.startswith("socket."):
            raise PermissionError("sandbox: no network")
        elif event in PROC_EVENTS:
            if not allow_sub:
                raise PermissionError("sandbox: starting processes is not allowed")
        elif event.startswith("ctypes."):
            raise PermissionError("sandbox: ctypes is not allowed")
        elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
            if event != "os.kill" or str(args[0]) != me:
                raise PermissionError("sandbox: signals to other processes are not allowed")
        elif event in INTROSPECT:
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event in PATH_EVENTS:
            paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))][:2]
            if not all(inside(p) for p in paths):
                raise PermissionError("sandbox: changing files outside the scratch directory is not allowed")
    sys.addaudithook(hook)
    if job.get("stdin") is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(job["stdin"].encode("utf-8")), encoding="utf-8")
    g = {"__name__": "__main__", "__builtins__": __builtins__, "__payload__": job.get("payload")}
    return compile(job["main"], "<sandbox>", "exec"), g
_c, _g = _lockdown()
del _lockdown
exec(_c, _g)
'''


@dataclass
class SandboxLimits:
    """Resource limits of one sandboxed run (all enforced per run)."""

    wall_timeout_s: float = 10.0       # wall clock from start to kill (includes interpreter start-up)
    cpu_time_s: int = 10               # RLIMIT_CPU (SIGXCPU at this many CPU seconds, SIGKILL one later)
    memory_mb: int = 1024              # RLIMIT_AS (address space)
    file_size_mb: int = 16             # RLIMIT_FSIZE: largest file the code may write
    scratch_mb: int = 64               # size of the working-directory tmpfs (bubblewrap only)
    nproc: int = 64                    # RLIMIT_NPROC: processes of the sandbox's user (not enforced for root)
    max_open_files: int = 64           # RLIMIT_NOFILE
    max_output_bytes: int = 1 << 20    # stdout + stderr; more kills the run (status "output_limit")
    allow_subprocess: bool = False     # let the code start processes (audit hook); RLIMIT_NPROC still applies

    def __post_init__(self):
        for k in ("wall_timeout_s", "cpu_time_s", "memory_mb", "file_size_mb", "scratch_mb", "nproc",
                  "max_open_files", "max_output_bytes"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"sandbox limit {k} must be a positive number, got {v!r}")


@dataclass
class SandboxResult:
    """What one run did. ``status``: ``ok`` (exit 0), ``error`` (non-zero exit), ``timeout`` (wall clock or CPU
    limit), ``output_limit``, ``file_limit`` (RLIMIT_FSIZE), ``killed`` (another signal, e.g. the OOM killer),
    ``sandbox_error`` (the sandbox itself could not start the run)."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    backend: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_BWRAP_STATE: dict[str, Any] = {}
_BWRAP_LOCK = threading.Lock()


def bwrap_available() -> bool:
    """True when ``bwrap`` is installed and can create the namespaces the sandbox uses (probed once)."""
    with _BWRAP_LOCK:
        if "ok" not in _BWRAP_STATE:
            path = shutil.which("bwrap")
            ok = False
            if path:
                try:
                    args = [path, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--die-with-parent",
                            "--proc", "/proc", "--dev", "/dev"]
                    if os.geteuid() != 0:
                        args.append("--unshare-user")
                    ok = subprocess.run(args + ["true"], capture_output=True, timeout=20).returncode == 0
                except (OSError, subprocess.SubprocessError):
                    ok = False
                if not ok:
                    log.warning("bwrap is installed but cannot create namespaces here; the sandbox falls back "
                                "to plain processes (network isolation best effort)")
            _BWRAP_STATE["ok"], _BWRAP_STATE["path"] = ok, path
        return bool(_BWRAP_STATE["ok"])


def _world_accessible(path: str) -> bool:
    """Every directory above ``path`` is searchable, and ``path`` readable, by other users."""
    try:
        p = os.path.realpath(path)
        parts = p.split(os.sep)
        for i in range(2, len(parts) + 1):
            st = os.stat(os.sep.join(parts[:i]) or os.sep)
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(p).st_mode & stat.S_IROTH)
    except OSError:
        return False


def _python_dirs(python: str) -> list[str]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(python)), os.path.dirname(os.path.abspath(python))}
    return sorted(os.path.realpath(d) for d in dirs if d)


def _rmtree(path: str) -> None:
    def fix(func, p, exc_info):  # a directory the code made read-only
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)


class Sandbox:
    """Runs Python source in a locked-down child process (see the module docstring).

    Args:
        limits: a :class:`SandboxLimits` or a dict of its fields.
        backend: ``"auto"`` (bubblewrap when usable, else plain processes), ``"bwrap"`` (error when unusable)
            or ``"process"``.
        python: the interpreter that runs the code (default: this one).
        drop_privileges: ``"auto"``: run as ``nobody`` when the parent is root (and, without bubblewrap, when
            the interpreter is readable by other users); ``True`` / ``False`` force it.
    """

    _warned_root = False

    def __init__(self, limits: SandboxLimits | dict | None = None, backend: str = "auto",
                 python: str | None = None, drop_privileges: bool | str = "auto"):
        if isinstance(limits, SandboxLimits):
            self.limits = limits
        else:
            self.limits = SandboxLimits(**dict(limits or {}))
        if backend not in ("auto", "bwrap", "process"):
            raise ValueError(f"sandbox backend must be 'auto', 'bwrap' or 'process', got {backend!r}")
        self.backend_choice = backend
        self.python = python or sys.executable
        if drop_privileges not in ("auto", True, False):
            raise ValueError(f"drop_privileges must be 'auto', True or False, got {drop_privileges!r}")
        self.drop_privileges = drop_privileges

    def __getstate__(self) -> dict:
        return {"limits": asdict(self.limits), "backend_choice": self.backend_choice, "python": self.python,
                "drop_privileges": self.drop_privileges}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limits"], state["backend_choice"], state["python"], state["drop_privileges"])

    def __repr__(self) -> str:
        return f"Sandbox(backend={self.backend_choice!r}, limits={self.limits})"

    # ------------------------------------------------------------------------------------------------ set-up
    @property
    def backend(self) -> str:
        if self.backend_choice == "process":
            return "process"
        if bwrap_available():
            return "bwrap"
        if self.backend_choice == "bwrap":
            raise RuntimeError("sandbox backend 'bwrap' requested but bubblewrap is not installed or cannot "
                               "create namespaces here (apt-get install bubblewrap)")
        return "process"

    def _run_as(self, backend: str) -> int | None:
        if os.name != "posix" or os.geteuid() != 0 or self.drop_privileges is False:
            return None
        if backend == "bwrap" or self.drop_privileges is True:
            return NOBODY
        import sysconfig
        needed = [self.python, sysconfig.get_paths()["stdlib"], os.path.dirname(os.__file__)]
        if all(_world_accessible(p) for p in needed):
            return NOBODY
        if not Sandbox._warned_root:
            Sandbox._warned_root = True
            log.warning("sandbox: running as root without bubblewrap and the interpreter is not readable by "
                        "other users, so sandboxed code runs as root (RLIMIT_NPROC does not bind; the audit "
                        "hook still refuses fork/exec). Install bubblewrap for full isolation.")
        return None

    def _bwrap_args(self, cwd: str, uid: int | None) -> list[str]:
        args = [_BWRAP_STATE["path"], "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp"]
        hidden = [d for d in _HIDDEN_DIRS if os.path.isdir(d)]
        for d in hidden:
            args += ["--perms", "0755", "--tmpfs", d]
        made: set[str] = set()
        bound: list[str] = []
        masked = [*hidden, "/tmp"]  # an interpreter or venv under /tmp (a CI checkout) must stay visible too
        for d in _python_dirs(self.python):  # the interpreter stays visible (and readable for `nobody`)
            top = next((h for h in masked if d.startswith(h + "/")), None)
            if top is None or any(d == b or d.startswith(b + "/") for b in bound):
                continue
            bound.append(d)
            parts = d[len(top) + 1:].split("/")
            for i in range(1, len(parts)):
                parent = "/".join([top, *parts[:i]])
                if parent not in made:
                    made.add(parent)
                    args += ["--perms", "0755", "--dir", parent]
            args += ["--ro-bind", d, d]
        args += ["--perms", "1777", "--size", str(int(self.limits.scratch_mb) << 20), "--tmpfs", cwd,
                 "--chdir", cwd, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        for k, v in self._env(cwd).items():
            args += ["--setenv", k, v]
        if os.geteuid() == 0:
            if uid is not None:
                args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            args.append("--unshare-user")
        return args + ["--"]

    @staticmethod
    def _env(cwd: str) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": cwd,
                "TMPDIR": cwd, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    # ------------------------------------------------------------------------------------------------ run
    def run(self, main: str, payload: Any = None, stdin: str | None = None) -> SandboxResult:
        """Run the Python source ``main`` as ``__main__`` in the sandbox. ``payload`` (JSON-serialisable) is
        available to it as the global ``__payload__``; ``stdin`` (text) becomes its ``sys.stdin``. Never raises
        for anything the code does; raises only when the sandbox itself is misconfigured."""
        lim = self.limits
        backend = self.backend
        uid = self._run_as(backend)
        t0 = time.monotonic()
        scratch = tempfile.mkdtemp(prefix="steprl-sbx-")
        job_file = None
        proc = None
        status = None
        out, err = bytearray(), bytearray()
        try:
            if uid is not None:
                os.chown(scratch, uid, uid)
            cfg = {"cwd": scratch, "cpu": int(max(1, lim.cpu_time_s)), "fsize": int(lim.file_size_mb) << 20,
                   "nofile": int(lim.max_open_files), "nproc": int(lim.nproc), "mem": int(lim.memory_mb) << 20,
                   "uid": uid, "allow_subprocess": bool(lim.allow_subprocess), "pid_ns": backend == "bwrap"}
            job = json.dumps({"main": main, "payload": payload, "stdin": stdin}).encode("utf-8")
            job_file = tempfile.TemporaryFile()  # already unlinked: the code cannot find it on disk
            job_file.write(job)
            job_file.seek(0)
            cmd = [self.python, "-I", "-B", "-X", "utf8", "-c", PRELUDE, json.dumps(cfg)]
            if backend == "bwrap":
                cmd = self._bwrap_args(scratch, uid) + cmd
            try:
                proc = subprocess.Popen(cmd, stdin=job_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=self._env(scratch), cwd=scratch, start_new_session=True,
                                        close_fds=True)
            except OSError as e:
                return SandboxResult("sandbox_error", None, "", f"could not start the sandbox: {e}",
                                     time.monotonic() - t0, backend)
            job_file.close()
            job_file = None
            status = self._collect(proc, out, err, t0)
        finally:
            if proc is not None:
                if proc.poll() is None:
                    self._kill(proc)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
                    pass
                for s in (proc.stdout, proc.stderr):
                    if s is not None:
                        s.close()
            if job_file is not None:
                job_file.close()
            _rmtree(scratch)
        rc = proc.returncode
        if status is None:
            if rc == 0:
                status = "ok"
            elif rc is not None and rc < 0:
                sig = -rc
                status = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "file_limit"}.get(sig, "killed")
            else:
                status = "error"
        return SandboxResult(status, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                             time.monotonic() - t0, backend, {"uid": uid})

    def _collect(self, proc: subprocess.Popen, out: bytearray, err: bytearray, t0: float) -> str | None:
        """Read stdout / stderr until both close, the deadline passes or the output cap is reached."""
        lim = self.limits
        deadline = t0 + float(lim.wall_timeout_s)
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    return "timeout"
                for key, _ in sel.select(timeout=left):
                    try:
                        data = os.read(key.fd, 65536)
                    except OSError as e:  # pragma: no cover
                        if e.errno == errno.EINTR:
                            continue
                        data = b""
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(data)
                    if len(out) + len(err) > lim.max_output_bytes:
                        del key.data[max(0, lim.max_output_bytes - (len(out) + len(err) - len(key.data))):]
                        return "output_limit"
        left = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(left, 0.001))
        except subprocess.TimeoutExpired:
            return "timeout"
        return None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.kill()
        except ProcessLookupError:
            pass
