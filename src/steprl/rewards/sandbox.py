"""Run untrusted (model-written) Python code in a sandbox.

Every run is a fresh process with, in layers:

* **OS limits** (cannot be undone from Python): ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS`` (address space),
  ``RLIMIT_FSIZE`` (largest file it may write), ``RLIMIT_NOFILE``, no core dumps, ``RLIMIT_NPROC`` (``nproc``
  tasks of the user; 0, so not even a thread, where there is no seccomp filter; it binds because the code never
  runs as root); a
  **wall-clock timeout** after which the whole process group (and, with bubblewrap, the whole PID namespace) is
  killed with SIGKILL, as it is after every run, so nothing outlives the call; **stdout / stderr capped** at
  ``max_output_bytes``; ``PR_SET_PDEATHSIG`` so it dies with the process that started it.
* **A seccomp filter** (Linux x86-64; inherited by everything the code could start) that refuses the system
  calls no test needs and that get past Python-level checks: creating processes (``fork`` / ``execve`` /
  ``clone`` without ``CLONE_THREAD``, unless ``allow_subprocess``; threads are allowed), sockets, signals /
  pidfds / ``ptrace`` / priorities / limits aimed at another process, ``setsid`` / ``setpgid`` (leaving the
  process group), symlinks and hard links, new namespaces and mounts, ``bpf``, ``io_uring``, keyrings.
* **A minimal environment**: no variable of the parent's environment is passed (only ``PATH``, ``LANG``,
  ``HOME``/``TMPDIR`` pointing at the scratch directory); the interpreter runs isolated and without
  ``site`` (``-I -S``): only the standard library is importable.
* **A scratch working directory**, created under a per-process root named after the owner's pid (roots of
  dead owners are swept when the next sandbox starts) and deleted after the run; its size is capped
  (``scratch_mb``: a tmpfs with bubblewrap, a size check that kills the run with the process backend).
* **A Python audit hook** (both backends) installed before the code runs: no sockets, no processes, no
  ``ctypes``, no signals to other processes; files may be written, created, removed or renamed only inside the
  scratch directory, and read only there and in the standard library; no directory outside the scratch
  directory may be opened (so ``dir_fd`` arguments can only point inside it) and no path may hold ``..``.
* **bubblewrap** (``bwrap``, ``backend="bwrap"`` or ``"auto"``): a new mount namespace holding only ``/usr``
  (read-only), the interpreter's own directories, ``/dev``, a private ``/proc`` and ``/tmp`` and a size-limited
  tmpfs as working directory, so the checkout, the data (answer keys), home directories and run stores do not
  exist inside; new PID / network / IPC / UTS namespaces (``--unshare-net``: **no network at all**).

**The program never runs as root**: a root caller's sandbox switches to user ``nobody`` (uid 65534). Without
bubblewrap (``backend="process"``, or ``"auto"`` where bubblewrap is missing) isolation is **weak**: file-system
containment rests on the audit hook and on file permissions, and a program reaching raw system calls through
C code (an extension already installed) gets past the hook. ``auto`` therefore refuses to run code without
bubblewrap unless the caller sets ``allow_weak_isolation=True``; the backend in use is logged when the sandbox
is first used. Install bubblewrap (``apt-get install bubblewrap``) for the real thing.

Judging code (:meth:`Sandbox.run_judged`): the trusted judge (test code) runs in one process of the sandbox and
the untrusted program in another, started by the judge; they talk over two pipes. The judge alone writes the
verdicts, to an output the program has no handle on, and the program's answers reach it as plain values
(``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``,
``set``, ``frozenset``) rebuilt by the judge, so no object of the program's making is ever compared.
"""
from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import re
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
PY_FLAGS = ("-I", "-S", "-B", "-X", "utf8")  # isolated, no site (standard library only), no .pyc, UTF-8 mode

# ---------------------------------------------------------------------------------------------------------------
# the prelude: the first code every sandboxed process runs (trusted). It reads its job from stdin, locks the
# process down and runs the job's `main` source. Parameters come in argv[1] (JSON); nothing secret is in them.
# role "untrusted": `main` is the program (or the trusted loop that serves it), locked down completely.
# role "judge": `main` is trusted test code; it may start untrusted processes (`__spawn__`) and signal them.
# ---------------------------------------------------------------------------------------------------------------
PRELUDE = r'''
def _lockdown():
    import io, json, os, resource, sys
    cfg = json.loads(sys.argv[1])
    judge = cfg["role"] == "judge"
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
    lim("RLIMIT_AS", cfg["mem"])
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    if os.getuid() == 0 or os.geteuid() == 0:
        os.write(2, b"sandbox: refusing to run code as root\n")
        os._exit(126)
    me = os.getpid()
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    ul = ctypes.c_ulong
    if sys.platform.startswith("linux"):
        libc.prctl(ul(1), ul(9), ul(0), ul(0), ul(0))  # PR_SET_PDEATHSIG = SIGKILL (after setuid, which clears it)
        if os.getppid() == 1 and not cfg["pid_ns"]:  # the parent is already gone
            os._exit(137)
        if judge:
            libc.prctl(ul(4), ul(0), ul(0), ul(0), ul(0))  # PR_SET_DUMPABLE 0: no ptrace, no /proc/<judge>
    allow_sub = bool(cfg["allow_subprocess"])
    spawning = []  # the judge starts processes only inside `spawn`, never from the test code
    filtered = judge or _seccomp(ctypes, libc, me, allow_sub)
    if not filtered:
        os.write(2, b"sandbox: no seccomp filter on this system (x86-64 Linux only): no threads either\n")
    # processes of this user (binds: never root): the judge's own; threads only for the program (its filter
    # refuses new processes), or nothing at all where there is no filter
    lim("RLIMIT_NPROC", cfg["nproc"] if filtered else 0)

    scratch = os.path.realpath(cfg["cwd"])
    realpath, fsdecode, sep, isdir, getcwd = os.path.realpath, os.fsdecode, os.sep, os.path.isdir, os.getcwd
    devnull = os.devnull
    roots = tuple(sorted({realpath(p) for p in sys.path if p} | {realpath("/proc/%d" % me)}))
    devices = frozenset({devnull, "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full"})
    children = set()
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    PATH_EVENTS = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
        "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "os.chflags", "os.lchflags", "os.setxattr",
        "os.removexattr", "os.mkfifo", "os.mknod"})
    PROC_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
        "subprocess.Popen", "pty.spawn", "os.startfile"})
    INTROSPECT = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.addaudithook"})

    def within(r, tops):
        return any(r == t or r.startswith(t + sep) for t in tops)

    def resolve(p):
        """The real absolute path of `p` (relative paths: from the cwd, which stays in scratch); None for a
        path with a `..` component (its meaning depends on a dir_fd the audit event does not show)."""
        p = fsdecode(p)
        if ".." in p.split(sep):
            return None
        return realpath(p if p.startswith(sep) else getcwd() + sep + p)

    def inside(p):
        if isinstance(p, int):
            return True  # an open descriptor: only ones inside scratch can exist (see "open")
        try:
            r = resolve(p)
        except Exception:
            return False
        return r is not None and within(r, (scratch,))

    def readable(p):
        if p is None or isinstance(p, int):
            return True
        try:
            r = resolve(p)
        except Exception:
            return False
        return r is not None and (within(r, (scratch,)) or within(r, roots))

    def hook(event, args):
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if path is None or isinstance(path, int):
                return
            try:
                r = resolve(path)
            except Exception:
                r = None
            if r is None:
                raise PermissionError("sandbox: this path is not allowed")
            if within(r, (scratch,)):
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & WRITE)
            if r in devices:
                if writing and r != devnull:
                    raise PermissionError("sandbox: writing outside the scratch directory is not allowed")
                return
            if writing:
                raise PermissionError("sandbox: writing outside the scratch directory is not allowed")
            if isdir(r):
                raise PermissionError("sandbox: directories outside the scratch directory cannot be opened")
            if not within(r, roots):
                raise PermissionError("sandbox: reading outside the scratch directory and the standard "
                                      "library is not allowed")
        elif event in ("os.listdir", "os.scandir"):
            if not readable(args[0] if args else None):
                raise PermissionError("sandbox: listing outside the scratch directory is not allowed")
        elif event == "os.chdir":
            if isinstance(args[0], int) or not inside(args[0]):
                raise PermissionError("sandbox: the working directory must stay inside the scratch directory")
        elif event in PATH_EVENTS:
            paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))][:2]
            if not all(inside(p) for p in paths):
                raise PermissionError("sandbox: changing files outside the scratch directory is not allowed")
        elif event in ("os.link", "os.symlink"):
            raise PermissionError("sandbox: links are not allowed")
        elif event.startswith("socket."):
            raise PermissionError("sandbox: no network")
        elif event in PROC_EVENTS:
            if not (allow_sub or spawning):
                raise PermissionError("sandbox: starting processes is not allowed")
        elif event.startswith("ctypes."):
            raise PermissionError("sandbox: ctypes is not allowed")
        elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
            if event == "os.kill" and (args[0] == me or args[0] in children):
                return
            raise PermissionError("sandbox: signals to other processes are not allowed")
        elif event == "resource.prlimit":
            if args[0] not in (0, me):
                raise PermissionError("sandbox: limits of other processes are not changeable")
        elif event == "sqlite3.connect":
            db = args[0] if args else None
            if db not in (None, "", ":memory:", b"", b":memory:") and not inside(db):
                raise PermissionError("sandbox: databases outside the scratch directory are not allowed")
        elif event in INTROSPECT:
            raise PermissionError(f"sandbox: {event} is not allowed")

    def send(fd, obj):
        data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        data = len(data).to_bytes(4, "big") + data
        while data:
            data = data[os.write(fd, data):]

    def recv(fd, limit=64 << 20):
        def exact(n):
            buf = bytearray()
            while len(buf) < n:
                b = os.read(fd, min(n - len(buf), 1 << 20))
                if not b:
                    raise EOFError("sandbox: the channel was closed")
                buf += b
            return bytes(buf)
        n = int.from_bytes(exact(4), "big")
        if n > limit:
            raise EOFError("sandbox: message over the size limit")
        return json.loads(exact(n).decode("utf-8"))

    class Child:
        """An untrusted process started by the judge: `send(obj)` / `recv()` JSON messages, `kill()`."""
        def __init__(self, proc, w, r):
            self.proc, self.w, self.r = proc, w, r

        def send(self, obj):
            send(self.w, obj)

        def recv(self):
            return recv(self.r)

        def kill(self):
            try:
                os.kill(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.wait()
            for fd in (self.w, self.r):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def spawn(main, payload=None):
        import subprocess
        r1, w1 = os.pipe()  # judge -> program
        r2, w2 = os.pipe()  # program -> judge
        ccfg = dict(cfg["child"], chan=[r1, w2])
        spawning.append(1)
        try:
            proc = subprocess.Popen([*cfg["argv"], "-c", job["prelude"], json.dumps(ccfg)], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(r1, w2),
                                    close_fds=True, env=job["env"], cwd=cfg["cwd"])
        finally:
            spawning.clear()
        children.add(proc.pid)
        os.close(r1)
        os.close(w2)
        try:
            proc.stdin.write(json.dumps({"main": main, "payload": payload}).encode("utf-8"))
            proc.stdin.close()
        except OSError:
            pass
        return Child(proc, w1, r2)

    import builtins
    if not hasattr(builtins, "exit"):  # `site` (not loaded) defines exit() / quit()
        def exit(code=None):
            raise SystemExit(code)
        builtins.exit = builtins.quit = exit
    sys.addaudithook(hook)
    if job.get("stdin") is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(job["stdin"].encode("utf-8")), encoding="utf-8")
    g = {"__name__": "__main__", "__builtins__": __builtins__, "__payload__": job.get("payload")}
    if judge:
        g["__spawn__"] = spawn
    if cfg.get("chan"):
        rfd, wfd = cfg["chan"]
        g["__channel__"] = (lambda: recv(rfd), lambda obj: send(wfd, obj))
    return compile(job["main"], "<sandbox>", "exec"), g


def _seccomp(ctypes, libc, me, allow_proc):
    """A seccomp filter (x86-64) refusing, with EPERM, the system calls that get past the audit hook."""
    import os, struct
    if not os.uname().machine == "x86_64":
        return False
    ALLOW, DENY, KILL = 0x7FFF0000, 0x00050001, 0x80000000
    deny = [41, 53,  # socket, socketpair
            101, 310, 311, 312, 424, 434, 438, 440,  # ptrace, process_vm_*, kcmp, pidfd_*, process_madvise
            109, 112, 141, 251, 135,  # setpgid, setsid (leave the group), setpriority, ioprio_set, personality
            86, 88, 265, 266,  # link, symlink, linkat, symlinkat
            155, 161, 165, 166, 272, 308, 428, 429, 430, 431, 432, 433, 442,  # mounts, chroot, namespaces
            248, 249, 250, 256, 279, 298, 303, 304,  # keyrings, NUMA moves, perf_event_open, file handles
            321, 323, 425, 426, 427]  # bpf, userfaultfd, io_uring
    if not allow_proc:
        deny += [57, 58, 59, 322]  # fork, vfork, execve, execveat; clone: threads only; clone3: ENOSYS (glibc
        # then uses clone, whose flags a filter can read)
    self_only = [62, 129, 200, 234, 297]  # kill, rt_sigqueueinfo, tkill, tgkill, rt_tgsigqueueinfo
    self_or_zero = [142, 144, 203, 302, 314]  # sched_setparam / setscheduler / setaffinity, prlimit64, sched_setattr
    code = [(0x20, 0, 0, 4), (0x15, 0, "kill", 0xC000003E), (0x20, 0, 0, 0), (0x35, "deny", 0, 0x40000000)]
    code += [(0x15, "deny", 0, nr) for nr in deny]
    if not allow_proc:
        code += [(0x15, "enosys", 0, 435), (0x15, "clone", 0, 56)]
    code += [(0x15, "self", 0, nr) for nr in self_only]
    code += [(0x15, "self0", 0, nr) for nr in self_or_zero]
    code.append((0x06, 0, 0, ALLOW))
    labels = {"self0": len(code)}
    code += [(0x20, 0, 0, 16), (0x15, "allow", 0, 0), (0x15, "allow", "deny", me)]
    labels["self"] = len(code)
    code += [(0x20, 0, 0, 16), (0x15, "allow", "deny", me)]
    labels["clone"] = len(code)
    code += [(0x20, 0, 0, 16), (0x45, "allow", "deny", 0x00010000)]  # CLONE_THREAD set: a thread
    labels["allow"] = len(code)
    code.append((0x06, 0, 0, ALLOW))
    labels["deny"] = len(code)
    code.append((0x06, 0, 0, DENY))
    labels["enosys"] = len(code)
    code.append((0x06, 0, 0, 0x00050000 | 38))
    labels["kill"] = len(code)
    code.append((0x06, 0, 0, KILL))
    rel = lambda x, i: labels[x] - i - 1 if isinstance(x, str) else x  # noqa: E731
    blob = b"".join(struct.pack("HBBI", op, rel(jt, i), rel(jf, i), k) for i, (op, jt, jf, k) in enumerate(code))
    buf = ctypes.create_string_buffer(blob, len(blob))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = Prog(len(code), ctypes.cast(buf, ctypes.c_void_p))
    ul = ctypes.c_ulong
    if libc.prctl(ul(38), ul(1), ul(0), ul(0), ul(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(ul(22), ul(2), ctypes.byref(prog), ul(0), ul(0)) == 0  # PR_SET_SECCOMP, FILTER


_c, _g = _lockdown()
del _lockdown, _seccomp
exec(_c, _g)
'''


@dataclass
class SandboxLimits:
    """Resource limits of one sandboxed run (all enforced per run)."""

    wall_timeout_s: float = 10.0       # wall clock from start to kill (includes interpreter start-up)
    cpu_time_s: int = 10               # RLIMIT_CPU per process (SIGXCPU at this many CPU seconds, SIGKILL one later)
    memory_mb: int = 1024              # RLIMIT_AS (address space) per process
    file_size_mb: int = 16             # RLIMIT_FSIZE: largest file the code may write
    scratch_mb: int = 64               # all files of the scratch dir together (tmpfs size / a checked cap)
    nproc: int = 64                    # RLIMIT_NPROC (tasks of the sandbox's user: the judge's, the program's threads)
    max_open_files: int = 64           # RLIMIT_NOFILE
    max_output_bytes: int = 1 << 20    # stdout + stderr; more kills the run (status "output_limit")
    allow_subprocess: bool = False     # let the code start processes (hook, seccomp, RLIMIT_NPROC = nproc)

    def __post_init__(self):
        for k in ("wall_timeout_s", "cpu_time_s", "memory_mb", "file_size_mb", "scratch_mb", "nproc",
                  "max_open_files", "max_output_bytes"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"sandbox limit {k} must be a positive number, got {v!r}")


@dataclass
class SandboxResult:
    """What one run did. ``status``: ``ok`` (exit 0), ``error`` (non-zero exit), ``timeout`` (wall clock or CPU
    limit), ``output_limit``, ``file_limit`` (RLIMIT_FSIZE), ``scratch_limit`` (the scratch dir grew past
    ``scratch_mb``), ``killed`` (another signal, e.g. the OOM killer), ``sandbox_error`` (the sandbox itself could
    not start the run)."""

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
_LOCK = threading.Lock()
_CHECKED: dict[tuple, tuple[str, int | None]] = {}
_INTERPRETERS: dict[str, dict] = {}
_SCRATCH_ROOTS: dict[tuple[int, str], str] = {}
_SCRATCH_NAME = re.compile(r"steprl-sbx-(\d+)-[A-Za-z0-9_]+")


def bwrap_available() -> bool:
    """True when ``bwrap`` is on ``PATH`` and can create the namespaces the sandbox uses (probed once)."""
    with _LOCK:
        if "ok" not in _BWRAP_STATE:
            path = shutil.which("bwrap")
            ok, why = False, "bwrap is not installed (not on PATH)"
            if path:
                try:
                    args = [path, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--die-with-parent",
                            "--proc", "/proc", "--dev", "/dev"]
                    if os.geteuid() != 0:
                        args.append("--unshare-user")
                    p = subprocess.run(args + ["true"], capture_output=True, timeout=20)
                    ok = p.returncode == 0
                    why = p.stderr.decode("utf-8", "replace").strip()[:200] or f"exit status {p.returncode}"
                except (OSError, subprocess.SubprocessError) as e:
                    why = str(e)
                if not ok:
                    why = f"{path} cannot create namespaces here ({why})"
            _BWRAP_STATE.update(ok=ok, path=path, why=None if ok else why)
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


def _searchable(path: str) -> bool:
    """Other users can enter ``path`` and every directory above it."""
    parts = os.path.realpath(path).split(os.sep)
    try:
        return all(os.stat(os.sep.join(parts[:i]) or os.sep).st_mode & stat.S_IXOTH for i in range(1, len(parts) + 1))
    except OSError:
        return False


def _interpreter(python: str) -> dict:
    """``exe``, ``prefixes`` and ``path`` (its standard library: ``sys.path`` without ``site``) of ``python``."""
    with _LOCK:
        if python not in _INTERPRETERS:
            code = ("import sys, json; print(json.dumps({'exe': sys.executable, 'path': [p for p in sys.path if p],"
                    " 'prefixes': sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})}))")
            try:
                out = subprocess.run([python, *PY_FLAGS, "-c", code], capture_output=True, timeout=60, env={},
                                     check=True).stdout
                _INTERPRETERS[python] = json.loads(out)
            except (OSError, subprocess.SubprocessError, ValueError) as e:
                raise RuntimeError(f"code sandbox: cannot run the interpreter {python!r}: {e}") from e
        return _INTERPRETERS[python]


def _rmtree(path: str) -> None:
    def fix(func, p, exc_info):  # a directory the code made read-only
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _scratch_root() -> str:
    """This process's scratch root, ``<tmp>/steprl-sbx-<pid>-<random>``; making it first removes the roots left
    by owners that are no longer running (a caller killed mid-run cannot clean up after itself)."""
    base, pid = tempfile.gettempdir(), os.getpid()
    with _LOCK:
        root = _SCRATCH_ROOTS.get((pid, base))
        if root is not None and os.path.isdir(root):
            return root
        try:
            names = os.listdir(base)
        except OSError:
            names = []
        for name in names:
            m = _SCRATCH_NAME.fullmatch(name)
            if m and int(m.group(1)) != pid and not _alive(int(m.group(1))):
                _rmtree(os.path.join(base, name))
        root = tempfile.mkdtemp(prefix=f"steprl-sbx-{pid}-", dir=base)
        os.chmod(root, 0o711)  # `nobody` reaches its own scratch dir inside, lists nothing
        _SCRATCH_ROOTS[(pid, base)] = root
        atexit.register(shutil.rmtree, root, True)
        return root


def _du(path: str, max_entries: int = 10_000) -> int:
    """Bytes used under ``path`` (allocated blocks); past ``max_entries`` files the answer is "too many"."""
    total, n, stack = 0, 0, [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    n += 1
                    if n > max_entries:
                        return 1 << 62
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
        except OSError:
            pass
    return total


class Sandbox:
    """Runs Python source in locked-down child processes (see the module docstring).

    Args:
        limits: a :class:`SandboxLimits` or a dict of its fields.
        backend: ``"auto"`` (bubblewrap when usable; else the process backend, only with
            ``allow_weak_isolation``), ``"bwrap"`` (an error when unusable) or ``"process"`` (needs
            ``allow_weak_isolation``).
        allow_weak_isolation: accept the process backend, whose isolation rests on an audit hook, seccomp and
            file permissions (no mount or network namespace). Off by default: without bubblewrap nothing runs.
        python: the interpreter that runs the code (default: this one's base interpreter, outside any venv).
            Only its standard library is importable. As root without bubblewrap it must be readable by
            ``nobody`` (e.g. ``/usr/bin/python3``).
    """

    def __init__(self, limits: SandboxLimits | dict | None = None, backend: str = "auto",
                 python: str | None = None, allow_weak_isolation: bool = False):
        if isinstance(limits, SandboxLimits):
            self.limits = limits
        else:
            self.limits = SandboxLimits(**dict(limits or {}))
        if backend not in ("auto", "bwrap", "process"):
            raise ValueError(f"sandbox backend must be 'auto', 'bwrap' or 'process', got {backend!r}")
        if not isinstance(allow_weak_isolation, bool):
            raise ValueError(f"sandbox allow_weak_isolation must be true or false, got {allow_weak_isolation!r}")
        self.backend_choice = backend
        self.allow_weak_isolation = allow_weak_isolation
        self.python = python or getattr(sys, "_base_executable", None) or sys.executable

    def __getstate__(self) -> dict:
        return {"limits": asdict(self.limits), "backend_choice": self.backend_choice, "python": self.python,
                "allow_weak_isolation": self.allow_weak_isolation}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limits"], state["backend_choice"], state["python"], state["allow_weak_isolation"])

    def __repr__(self) -> str:
        return (f"Sandbox(backend={self.backend_choice!r}, allow_weak_isolation={self.allow_weak_isolation}, "
                f"limits={self.limits})")

    # ------------------------------------------------------------------------------------------------ set-up
    def check(self) -> str:
        """Resolve the backend (logged once per process), raising ``RuntimeError`` where code must not run."""
        return self._resolve()[0]

    @property
    def backend(self) -> str:
        return self._resolve()[0]

    def _resolve(self) -> tuple[str, int | None]:
        key = (self.backend_choice, self.allow_weak_isolation, self.python, os.geteuid())
        if key in _CHECKED:
            return _CHECKED[key]
        choice = self.backend_choice
        if choice != "process" and bwrap_available():
            backend = "bwrap"
        elif choice == "bwrap":
            raise RuntimeError(f"code sandbox: backend 'bwrap' requested but {_BWRAP_STATE['why']}; install "
                               "bubblewrap (apt-get install bubblewrap; scripts/setup.sh does)")
        else:
            backend = "process"
        if backend == "process" and not self.allow_weak_isolation:
            why = "backend 'process' was chosen" if choice == "process" else _BWRAP_STATE["why"]
            raise RuntimeError(
                f"code sandbox: {why}, and without bubblewrap model-written code is isolated only weakly (an "
                "audit hook, seccomp and file permissions; no mount or network namespace). Install bubblewrap "
                "(apt-get install bubblewrap; scripts/setup.sh does), or accept the weak isolation explicitly "
                "with task.sandbox.allow_weak_isolation=true (Sandbox(allow_weak_isolation=True)).")
        uid = NOBODY if os.name == "posix" and os.geteuid() == 0 else None
        info = _interpreter(self.python)
        if backend == "process" and uid is not None:
            blocked = [p for p in [info["exe"], *info["path"]] if os.path.exists(p) and not _world_accessible(p)]
            if blocked:
                raise RuntimeError(
                    f"code sandbox: as root the process backend runs code as user nobody (never as root), who "
                    f"cannot read {blocked[0]} of the interpreter {self.python}; set task.sandbox.python to an "
                    "interpreter other users can read (e.g. /usr/bin/python3), or install bubblewrap")
        who = f"as uid {uid}" if uid is not None else f"as this user (uid {os.geteuid()})"
        if backend == "bwrap":
            log.info("code sandbox: bubblewrap (%s), code runs %s; only the interpreter and its standard library "
                     "are visible, no network", _BWRAP_STATE["path"], who)
        else:
            log.warning("code sandbox: WEAK isolation (process backend, allow_weak_isolation=true): code runs %s "
                        "behind an audit hook, seccomp and file permissions, with no mount or network namespace; "
                        "install bubblewrap for real isolation", who)
        _CHECKED[key] = (backend, uid)
        return backend, uid

    def _bwrap_args(self, cwd: str, uid: int | None) -> list[str]:
        args = [_BWRAP_STATE["path"], "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            p = "/" + name
            if os.path.islink(p):
                args += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                args += ["--ro-bind", p, p]
        for f in ("/etc/ld.so.cache", "/etc/localtime"):
            args += ["--ro-bind-try", f, f]
        info = _interpreter(self.python)
        dirs = {os.path.realpath(d) for d in [*info["prefixes"], os.path.dirname(info["exe"]),
                                              os.path.dirname(os.path.realpath(info["exe"]))]}
        made: set[str] = set()
        for d in sorted(dirs):
            if d != "/usr" and not d.startswith("/usr/") and os.path.isdir(d):
                parts = d.split("/")
                for i in range(2, len(parts)):  # parents readable by `nobody` (bwrap would copy 0700 from /root)
                    parent = "/".join(parts[:i])
                    if parent not in made:
                        made.add(parent)
                        args += ["--perms", "0755", "--dir", parent]
                args += ["--ro-bind", d, d]
        args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", str(int(self.limits.scratch_mb) << 20), "--tmpfs", cwd,
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
        """Run the untrusted Python source ``main`` as ``__main__`` in the sandbox. ``payload``
        (JSON-serialisable) is available to it as the global ``__payload__``; ``stdin`` (text) becomes its
        ``sys.stdin``. Never raises for anything the code does; raises only when the sandbox itself is
        misconfigured or must not run code here (see :meth:`check`)."""
        return self._run(main, payload, stdin, judge=False)

    def run_judged(self, judge: str, payload: Any = None) -> SandboxResult:
        """Run the trusted source ``judge`` in the sandbox; it starts untrusted programs with the global
        ``__spawn__(main, payload)``, which returns a handle with ``send(obj)``, ``recv()`` and ``kill()``. The
        program (``main``, locked down like :meth:`run`'s) exchanges JSON messages with the judge through the
        global ``__channel__ = (recv, send)``; its stdout and stderr go to ``/dev/null``. The result's stdout is
        the judge's alone: the program has no handle on it."""
        return self._run(judge, payload, None, judge=True)

    def _run(self, main: str, payload: Any, stdin: str | None, judge: bool) -> SandboxResult:
        lim = self.limits
        backend, uid = self._resolve()
        t0 = time.monotonic()
        root = _scratch_root()
        if backend == "process" and uid is not None and not _searchable(root):
            raise RuntimeError(f"code sandbox: user nobody cannot reach the scratch root {root}; point TMPDIR at a "
                               "directory every user can enter (such as /tmp)")
        scratch = tempfile.mkdtemp(prefix="run-", dir=root)
        job_file = None
        proc = None
        status = None
        out, err = bytearray(), bytearray()
        try:
            if uid is not None:
                os.chown(scratch, uid, uid)
            fsize = int(min(lim.file_size_mb, lim.scratch_mb)) << 20
            cfg = {"role": "untrusted", "cwd": scratch, "cpu": int(max(1, lim.cpu_time_s)), "fsize": fsize,
                   "nofile": int(lim.max_open_files), "mem": int(lim.memory_mb) << 20, "uid": uid,
                   "nproc": int(lim.nproc),
                   "allow_subprocess": bool(lim.allow_subprocess), "pid_ns": backend == "bwrap"}
            job: dict[str, Any] = {"main": main, "payload": payload, "stdin": stdin}
            if judge:
                cfg = dict(cfg, role="judge", nproc=int(lim.nproc), argv=[self.python, *PY_FLAGS],
                           child=dict(cfg, uid=None))
                job.update(prelude=PRELUDE, env=self._env(scratch))
            job_file = tempfile.TemporaryFile()  # already unlinked: the code cannot find it on disk
            job_file.write(json.dumps(job).encode("utf-8"))
            job_file.seek(0)
            cmd = [self.python, *PY_FLAGS, "-c", PRELUDE, json.dumps(cfg)]
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
            status = self._collect(proc, out, err, t0, scratch if backend == "process" else None)
        finally:
            if proc is not None:
                self._kill(proc)  # the whole process group, every time: nothing outlives the call
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

    def _collect(self, proc: subprocess.Popen, out: bytearray, err: bytearray, t0: float,
                 scratch: str | None) -> str | None:
        """Read stdout / stderr until both close and the process exits, or the deadline passes, or a cap is
        reached. The process is not reaped here, so its process group can still be killed safely."""
        lim = self.limits
        deadline = t0 + float(lim.wall_timeout_s)
        cap = int(lim.scratch_mb) << 20
        next_du = time.monotonic() + 0.1
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return "timeout"
                if scratch is not None and now >= next_du:
                    if _du(scratch) > cap:
                        return "scratch_limit"
                    next_du = now + 0.1
                if not sel.get_map():
                    if self._exited(proc.pid):
                        return None
                    time.sleep(0.01)
                    continue
                for key, _ in sel.select(timeout=min(deadline - now, 0.1)):
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

    @staticmethod
    def _exited(pid: int) -> bool:
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

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
