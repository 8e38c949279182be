"""Run model-written Python with limits: the verifier of the code-producing task families.

The task families of Jones, Dragan & Steinhardt (2024), "Adversaries Can Misuse Combinations
of Safe Models" (arXiv 2406.14595), judge programs written by language models: canary code runs
unit tests and a trigger test, a flag script must print a flag read from a toy vault. Such code
is run here, one fresh process per call, with layers that catch the usual accidents:

- `python -I` (isolated mode: no user site, no PYTHON* variables) in a fresh temporary
  folder (under $ALIGNLAB_SANDBOX_DIR, else /dev/shm where writable, else the system's
  temporary directory), removed afterwards; a minimal environment (PATH, LANG, HOME and TMPDIR
  pointing at the folder: no API keys or other secrets of the parent);
- its own process group (a new session), killed as a whole on timeout;
- resource limits: CPU seconds, address space, file size, open files, no core dumps;
- an audit hook (`sys.addaudithook`), installed by a small bootstrap before the user code runs,
  that blocks sockets, `subprocess`, `os.system`, `os.exec*`, `os.spawn*`, `os.posix_spawn`,
  `os.fork` and every write, removal, rename, hard link (its source included) or extended
  attribute change outside the temporary folder (reading, e.g. the standard library, works);
- in the same bootstrap, `_posixsubprocess.fork_exec` (which starts programs without an audit
  event: `multiprocessing`'s spawn and forkserver start methods and its resource tracker go
  through it) replaced by a function that refuses, and re-importing that module refused;
- `os.open` with a `dir_fd` refused for writing (the audit event does not carry the `dir_fd`,
  so the name could not be checked), also when reached through `open(..., opener=...)`;
- each blocked call listed in `SandboxResult.blocked`;
- `unshare -rn` (a user and network namespace: no network interface but loopback, down) where
  the system allows it, probed once per process.

THIS IS NO SECURITY BOUNDARY. It guards against accidents (runaway loops, stray writes,
network calls), not against hostile code: an audit hook (and the replaced functions) is
bypassed by ctypes or by a C extension (e.g. libc's `fork()`, which only the process group kill
on timeout catches), `os.mkfifo` and `os.mknod` raise no audit event, and nothing here stops
reads of the parent's files. Run code you would not run yourself in a real sandbox (a
container or a VM).

The isolation actually used is reported with every result (`SandboxResult.isolation`), e.g.
"unshare-rn+audit+rlimits", or "audit+rlimits" where `unshare` is missing or not permitted.
"""

from __future__ import annotations

import functools
import logging
import marshal
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

from alignlab.core.errors import AlignlabError

log = logging.getLogger(__name__)

MAIN = "main.py"  # the user code's file name in the temporary folder

# The child runs this before the user code: `python -I -c <load the bootstrap> fd cpu mem fsize
# nfiles main.py main.code`. The parent compiles the bootstrap once and the user code on every
# run (main.code, or "" when it does not compile) and the child loads both with `marshal`: the
# first `compile()` in a fresh interpreter costs about a millisecond (it builds the AST types).
# The bootstrap imports nothing beyond what the interpreter loads at startup but `resource` and
# `_posixsubprocess` (small C modules), so that it costs next to nothing.
_BOOTSTRAP = r"""
import marshal, os, sys, resource, posix, _posixsubprocess

def _sandbox():
    fd, cpu, mem, fsize, nfiles, main, compiled = sys.argv[1:8]
    R = resource
    for lim, soft, hard in (
        (R.RLIMIT_CPU, int(cpu), int(cpu) + 1),
        (R.RLIMIT_AS, int(mem), int(mem)),
        (R.RLIMIT_FSIZE, int(fsize), int(fsize)),
        (R.RLIMIT_NOFILE, int(nfiles), int(nfiles)),
        (R.RLIMIT_CORE, 0, 0),
    ):
        old = R.getrlimit(lim)[1]
        if old != R.RLIM_INFINITY:
            soft, hard = min(soft, old), min(hard, old)
        R.setrlimit(lim, (soft, hard))

    report, seen = int(fd), set()
    root = os.path.realpath(os.getcwd())
    prefix = root + os.sep
    realpath, isabs, join = os.path.realpath, os.path.isabs, os.path.join
    getcwd, readlink, write = os.getcwd, os.readlink, os.write
    fspath, fsdecode = os.fspath, os.fsdecode
    W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    allowed = frozenset(("/dev/null",))
    deny = frozenset((
        "subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
        "os.forkpty", "pty.spawn", "os.startfile",
    ))
    # event -> (index of a path argument, index of its dir_fd argument or None), ...
    paths = {
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
        "os.rename": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
        # a hard link to an outside file would make it writable through the new name
        "os.link": ((0, 2), (1, 3)),
        "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.truncate": ((0, None),),
        "os.utime": ((0, 3),), "shutil.rmtree": ((0, 1),),
        "os.setxattr": ((0, None),), "os.removexattr": ((0, None),),
    }

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True  # an open file descriptor: opened under these rules
        try:
            p = fsdecode(fspath(path))
            if not isabs(p):
                at_cwd = dir_fd is None or dir_fd < 0
                p = join(getcwd() if at_cwd else readlink(f"/proc/self/fd/{dir_fd}"), p)
            p = realpath(p)
        except Exception:
            return False
        return p == root or p.startswith(prefix) or p in allowed

    def block(event, detail):
        entry = f"{event} {detail}".strip().replace("\n", " ")[:200]
        if entry not in seen and len(seen) < 64:
            seen.add(entry)
            try:
                write(report, (entry + "\n").encode())
            except OSError:
                pass
        raise PermissionError(f"blocked by the alignlab sandbox: {entry}")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if isinstance(flags, int):
                writing = flags & W
            else:
                writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if writing and not inside(path):
                block(event, fsdecode(fspath(path)) if not isinstance(path, int) else path)
        elif event in paths:
            for i, j in paths[event]:
                if not inside(args[i], None if j is None else args[j]):
                    block(event, args[i])
        elif event == "import" and args[0] == "_posixsubprocess":
            block(event, args[0])  # a fresh copy of the module would bring fork_exec back
        elif event in deny or event.startswith("socket."):
            detail = ""
            if event in ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn"):
                detail = str(args[0])[:80]
            elif event == "socket.connect" and len(args) > 1:
                detail = str(args[1])[:80]
            block(event, detail)

    # `_posixsubprocess.fork_exec` starts a program without an audit event: `subprocess` raises
    # one before it, but `multiprocessing` (spawn, forkserver, its resource tracker) does not,
    # and the new interpreter would run without this hook.
    def fork_exec(*args, **kwargs):
        try:
            detail = " ".join(fsdecode(a) for a in args[0])[:80]
        except Exception:
            detail = ""
        block("_posixsubprocess.fork_exec", detail)

    _posixsubprocess.fork_exec = fork_exec

    # The "open" event does not carry `dir_fd`, so the hook would resolve a relative name
    # against the working directory instead of that directory: a writing `os.open` with a
    # `dir_fd` is refused (reading is fine).
    real_open = posix.open

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None and flags & W:
            try:
                name = fsdecode(fspath(path))
            except TypeError:
                name = repr(path)
            block("open", f"{name} dir_fd={dir_fd}")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    open_.__name__ = open_.__qualname__ = "open"
    os.open = posix.open = open_
    os.supports_dir_fd.add(open_)  # shutil checks this set to choose its fd-based functions

    sys.addaudithook(hook)
    sys.argv = [main]
    sys.path.insert(0, root)
    sys.dont_write_bytecode = True
    mod = type(sys)("__main__")
    mod.__file__ = main
    mod.__builtins__ = __builtins__
    sys.modules["__main__"] = mod
    if compiled:  # compiled by the parent: `compile` here would first build the AST types
        with open(compiled, "rb") as f:
            code = marshal.loads(f.read())
    else:  # the parent could not compile it cleanly: compile here for the error or warnings
        with open(main, "rb") as f:
            source = f.read()
        try:
            code = compile(source, main, "exec")
        except (SyntaxError, ValueError) as e:
            import traceback
            traceback.print_exception(type(e), e, None)
            sys.exit(1)
    try:
        exec(code, mod.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        import traceback
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.stderr.flush()
        sys.exit(1)

_sandbox()
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run (rlimits of the child process)."""

    cpu_s: float = 5  # CPU seconds (rounded up): SIGXCPU at the limit, SIGKILL a second later
    memory_mb: int = 512  # address space (RLIMIT_AS); allocations beyond it raise MemoryError
    file_mb: int = 8  # largest file the child may write (stdout and stderr included)
    n_files: int = 64  # open file descriptors

    def __post_init__(self) -> None:
        rules = (("cpu_s", (int, float), 0.01), ("memory_mb", int, 64), ("file_mb", int, 1))
        for name, types, low in (*rules, ("n_files", int, 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, types) or not value >= low:
                kind = "a number" if name == "cpu_s" else "an integer"
                raise AlignlabError(
                    f"SandboxLimits.{name} must be {kind} >= {low:g}, got {value!r}"
                )


@dataclass
class SandboxResult:
    """What one run gave: exit status (negative: killed by that signal), the decoded output,
    whether the wall-clock timeout killed it, the isolation used and the blocked calls."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    isolation: str
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """`("unshare", "-rn")` when it works here (probed once with this interpreter), else ()."""
    exe = shutil.which("unshare")
    if exe is not None:
        try:
            probe = subprocess.run(
                [exe, "-rn", sys.executable, "-I", "-S", "-c", "pass"],
                capture_output=True,
                timeout=10,
                env=_environment("/"),
            )
            if probe.returncode == 0:
                log.info("sandbox isolation: unshare-rn+audit+rlimits")
                return (exe, "-rn")
            log.info("sandbox: `unshare -rn` failed (%s); isolation: audit+rlimits", probe.stderr)
        except (OSError, subprocess.SubprocessError) as e:
            log.info("sandbox: `unshare -rn` unusable (%s); isolation: audit+rlimits", e)
    else:
        log.info("sandbox: no `unshare`; isolation: audit+rlimits")
    return ()


def isolation() -> str:
    """The isolation `run_python` uses on this machine: "unshare-rn+audit+rlimits" or
    "audit+rlimits"."""
    return ("unshare-rn+" if _unshare_prefix() else "") + "audit+rlimits"


def _base_dir() -> str | None:
    """Where the temporary folders go: $ALIGNLAB_SANDBOX_DIR, else /dev/shm (memory: creating
    and removing a folder there costs microseconds, on a busy disk milliseconds), else the
    system's temporary directory."""
    chosen = os.environ.get("ALIGNLAB_SANDBOX_DIR")
    if chosen:
        return chosen
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


def _environment(work: str) -> dict[str, str]:
    """The child's whole environment: nothing of the parent's but PATH."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": work,
        "TMPDIR": work,
    }


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove(path: str) -> None:
    """Remove the temporary folder, even where the child took its own permissions away."""
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                try:
                    os.chmod(os.path.join(dirpath, name), 0o700, follow_symlinks=False)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)


def _check_files(files: dict[str, str | bytes]) -> list[tuple[str, bytes]]:
    out = []
    for name, content in files.items():
        parts = name.replace("\\", "/").split("/") if isinstance(name, str) else []
        if not parts or os.path.isabs(name) or any(p in ("", ".", "..") for p in parts):
            raise AlignlabError(
                f"sandbox file names must be relative paths without '..', got {name!r}"
            )
        if name == MAIN:
            raise AlignlabError(
                f"{MAIN!r} is the sandbox's name for the code itself; rename the file"
            )
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            raise AlignlabError(
                f"sandbox file {name!r} must be str or bytes, got {type(content).__name__}"
            )
        out.append(("/".join(parts), content))
    return out


@functools.cache
def _bootstrap_code() -> bytes:
    """The bootstrap, compiled once (marshal: the child runs the same interpreter)."""
    return marshal.dumps(compile(_BOOTSTRAP, "<alignlab-sandbox>", "exec"))


def _wait(proc: subprocess.Popen, report: int, deadline: float, chunks: list[bytes]) -> bool:
    """Wait for the child until the deadline; True when it timed out. A select on a pidfd (or,
    without one, on the report pipe, whose EOF says the child is gone) wakes at once, where
    `Popen.wait(timeout)` sleeps and polls. Report lines read meanwhile go to `chunks`."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pidfd if pidfd >= 0 else report], [], [], left)[0]:
                return True
            if pidfd >= 0:
                break  # the child exited
            data = os.read(report, 65536)
            if not data:
                break  # EOF: the child exited (or closed the pipe itself)
            chunks.append(data)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        return True
    return False


def _drain(fd: int, chunks: list[bytes]) -> bytes:
    """What is left in a pipe, without blocking."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def run_python(
    code: str,
    *,
    stdin: str = "",
    files: dict[str, str | bytes] | None = None,
    timeout: float = 5.0,
    limits: SandboxLimits | None = None,
) -> SandboxResult:
    """Run `code` as a script in a fresh temporary folder (with `files` written there first,
    importable from the code) and return its exit status, output and what was blocked.

    The folder is the working directory, HOME and TMPDIR; it is removed afterwards. After
    `timeout` wall-clock seconds the whole process group is killed (`timed_out`, returncode
    -9). Not a security boundary: see the module's docstring."""
    if not isinstance(code, str):
        raise AlignlabError(f"code must be a str, got {type(code).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise AlignlabError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not isinstance(stdin, str):
        raise AlignlabError(f"stdin must be a str, got {type(stdin).__name__}")
    limits = SandboxLimits() if limits is None else limits
    if not isinstance(limits, SandboxLimits):
        raise AlignlabError(f"limits must be a SandboxLimits, got {type(limits).__name__}")
    extra = _check_files(files or {})
    prefix = _unshare_prefix()
    used = ("unshare-rn+" if prefix else "") + "audit+rlimits"

    tmp = tempfile.mkdtemp(prefix="alignlab-sandbox-", dir=_base_dir())
    try:
        work = os.path.join(tmp, "work")
        os.mkdir(work)
        for name, content in extra:
            path = os.path.join(work, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
        main = os.path.join(work, MAIN)
        with open(main, "w", encoding="utf-8") as f:
            f.write(code)
        compiled = os.path.join(tmp, "main.code")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                user_code = compile(code, main, "exec", dont_inherit=True, optimize=0)
            except (SyntaxError, ValueError):
                user_code = None
        if user_code is None or caught:
            compiled = ""  # the child compiles it again and reports the error or warnings
        else:
            with open(compiled, "wb") as f:
                f.write(marshal.dumps(user_code))
        boot = os.path.join(tmp, "bootstrap")
        with open(boot, "wb") as f:
            f.write(_bootstrap_code())
        stdin_path, stdout_path, stderr_path = (os.path.join(tmp, n) for n in ("in", "out", "err"))
        with open(stdin_path, "wb") as f:
            f.write(stdin.encode())
        report, child_end = os.pipe()  # the blocked calls
        try:
            argv = [
                *prefix,
                sys.executable,
                "-I",
                "-c",
                f"import marshal;exec(marshal.loads(open({boot!r},'rb').read()))",
                str(child_end),
                str(math.ceil(limits.cpu_s)),
                str(limits.memory_mb * 2**20),
                str(limits.file_mb * 2**20),
                str(limits.n_files),
                main,
                compiled,
            ]
            with (
                open(stdin_path, "rb") as fin,
                open(stdout_path, "wb") as fout,
                open(stderr_path, "wb") as ferr,
            ):
                proc = subprocess.Popen(
                    argv,
                    cwd=work,
                    env=_environment(work),
                    stdin=fin,
                    stdout=fout,
                    stderr=ferr,
                    pass_fds=(child_end,),
                    start_new_session=True,
                )
            os.close(child_end)
            child_end = -1
            chunks: list[bytes] = []
            try:
                timed_out = _wait(proc, report, time.monotonic() + timeout, chunks)
            finally:
                _kill_group(proc.pid)  # on timeout, or whatever the code left running
                returncode = proc.wait()
            blocked_bytes = _drain(report, chunks)
        finally:
            os.close(report)
            if child_end >= 0:
                os.close(child_end)
        stdout, stderr = _read(stdout_path), _read(stderr_path)
        blocked = [x for x in blocked_bytes.decode("utf-8", "replace").splitlines() if x]
    finally:
        _remove(tmp)
    return SandboxResult(returncode, stdout, stderr, timed_out, used, blocked)
