"""The sandbox of the code-producing task families: limits, blocked calls, clean-up."""

import json
import os
import signal
import time

import pytest

from alignlab.core.errors import AlignlabError
from alignlab.model_combos import sandbox
from alignlab.model_combos.sandbox import SandboxLimits, SandboxResult, run_python

ISOLATIONS = ("unshare-rn+audit+rlimits", "audit+rlimits")


def test_stdout_returncode_stdin_and_files():
    r = run_python("print('hi')\nimport sys\nsys.exit(3)")
    assert isinstance(r, SandboxResult)
    assert (r.returncode, r.stdout, r.timed_out, r.blocked) == (3, "hi\n", False, [])

    code = "import helper\nprint(helper.X + int(input()))\nprint(open('data/raw.bin', 'rb').read())"
    r = run_python(code, stdin="5\n", files={"helper.py": "X = 37", "data/raw.bin": b"\x00\x01"})
    assert r.ok and r.stdout == "42\nb'\\x00\\x01'\n"


def test_errors_reach_stderr():
    r = run_python("def f():\n    return 1 / 0\nf()")
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr and "main.py" in r.stderr
    r = run_python("def f(:\n    pass")
    assert r.returncode == 1 and "SyntaxError" in r.stderr


# The child forks through libc (ctypes raises no audit event, unlike `os.fork`): its own child
# stays in the process group and outlives a kill of the child alone.
FORKING = """
import ctypes, os, time
print(os.getpgrp(), flush=True)
if ctypes.CDLL(None).fork() == 0:
    os.write(1, f"{os.getpid()}\\n".encode())
while True:
    time.sleep(0.05)
"""


def _state(pid: int) -> str | None:
    """The state letter of a process ("Z": a zombie, as good as dead), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(group) == pgid and state != "Z":
            found.append(int(pid))
    return found


def _settled(pgid: int, grace: float = 2.0) -> list[int]:
    """The group's live processes once they had `grace` seconds to die."""
    deadline = time.monotonic() + grace
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _group(pgid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_timeout_kills_the_process_group(monkeypatch):
    limits = SandboxLimits(cpu_s=30)
    # Killing the child alone leaves its own child running, so what follows tests the group.
    monkeypatch.setattr(sandbox, "_kill_group", lambda pid: os.kill(pid, signal.SIGKILL))
    r = run_python(FORKING, timeout=1.0, limits=limits)
    pgid, grandchild = map(int, r.stdout.split())
    try:
        assert r.timed_out and grandchild != pgid
        assert _state(grandchild) not in (None, "Z") and _group(pgid) == [grandchild]
    finally:
        _kill(grandchild)
    monkeypatch.undo()

    r = run_python(FORKING, timeout=1.0, limits=limits)
    pgid, grandchild = map(int, r.stdout.split())
    try:
        assert r.timed_out and r.returncode == -signal.SIGKILL and grandchild != pgid
        assert _settled(pgid) == [] and _state(grandchild) in (None, "Z")
    finally:
        _kill(grandchild)


def test_cpu_limit():
    r = run_python("while True:\n    pass", timeout=20, limits=SandboxLimits(cpu_s=1))
    assert not r.timed_out
    assert r.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


def test_memory_limit():
    r = run_python("x = bytearray(2 * 1024**3)\nprint('allocated')")
    assert r.returncode == 1 and "MemoryError" in r.stderr and "allocated" not in r.stdout


def test_file_size_limit():
    code = "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (2 * 2**20))"
    r = run_python(code, limits=SandboxLimits(file_mb=1))
    assert r.returncode == 1 and "File too large" in r.stderr
    assert run_python(code, limits=SandboxLimits(file_mb=4)).ok


def test_writes_outside_the_folder_are_blocked(tmp_path):
    stray, keep = tmp_path / "stray.txt", tmp_path / "keep.txt"
    keep.write_text("keep me")
    code = f"""
import os
for action in (
    lambda: open({str(stray)!r}, "w").write("oops"),
    lambda: os.open({str(stray)!r}, os.O_WRONLY | os.O_CREAT),
    lambda: os.remove({str(keep)!r}),
    lambda: os.rename({str(keep)!r}, "taken.txt"),
    lambda: os.setxattr({str(keep)!r}, "user.alignlab", b"x"),
    lambda: os.removexattr({str(keep)!r}, "user.alignlab"),
):
    try:
        action()
        print("done")
    except PermissionError:
        print("blocked")
with open("inside.txt", "w") as f:
    f.write("fine")
os.mkdir("sub")
os.rename("inside.txt", "sub/moved.txt")
print(open("sub/moved.txt").read(), open(os.__file__).read(10) != "")
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.split() == ["blocked"] * 6 + ["fine", "True"]
    assert not stray.exists() and keep.read_text() == "keep me"
    assert f"open {stray}" in r.blocked and f"os.remove {keep}" in r.blocked
    assert f"os.setxattr {keep}" in r.blocked and f"os.removexattr {keep}" in r.blocked


def test_network_and_processes_are_blocked():
    code = """
import os, socket, subprocess, sys, _posixsubprocess
for action in (
    lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
    lambda: subprocess.run(["true"]),
    lambda: os.system("true"),
    lambda: os.fork(),
    lambda: os.execv("/bin/true", ["true"]),
    lambda: os.posix_spawn("/bin/true", ["true"], {}),
    lambda: _posixsubprocess.fork_exec([b"true"], [b"/bin/true"]),
    lambda: (sys.modules.pop("_posixsubprocess"), __import__("_posixsubprocess")),
):
    try:
        action()
        print("ran")
    except PermissionError:
        print("blocked")
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.split() == ["blocked"] * 8
    names = {b.split()[0] for b in r.blocked}
    assert {"subprocess.Popen", "os.system", "os.fork", "os.exec", "os.posix_spawn"} <= names
    assert {"_posixsubprocess.fork_exec", "import"} <= names
    assert any(n.startswith("socket.") for n in names)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_cannot_start_an_interpreter(tmp_path, method):
    # These start methods run a fresh interpreter (without the audit hook) through
    # `_posixsubprocess.fork_exec`, which raises no audit event of its own.
    stray = tmp_path / "escaped.txt"
    code = f"""
import multiprocessing, os

def write(path):
    with open(path, "w") as f:
        f.write("escaped")

def others():  # the other live processes with this one's getsid()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with open(f"/proc/{{pid}}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if int(pid) != os.getpid() and int(fields[3]) == os.getsid(0) and fields[0] != "Z":
            found.append(pid)
    return found

if __name__ == "__main__":
    p = multiprocessing.get_context({method!r}).Process(target=write, args=({str(stray)!r},))
    try:
        p.start()
        p.join()
        print("ran", p.exitcode)
    except PermissionError:
        print("blocked")
    print(multiprocessing.active_children(), others())
"""
    r = run_python(code, timeout=20)
    assert r.ok, r.stderr
    assert r.stdout.splitlines() == ["blocked", "[] []"]
    assert not stray.exists()
    assert any(b.startswith("_posixsubprocess.fork_exec ") for b in r.blocked), r.blocked


def test_hard_links_from_outside_are_blocked(tmp_path, monkeypatch):
    # The temporary folder on the same filesystem as the outside file: a link could work.
    (tmp_path / "sandboxes").mkdir()
    monkeypatch.setenv("ALIGNLAB_SANDBOX_DIR", str(tmp_path / "sandboxes"))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    code = f"""
import os
try:
    os.link({str(victim)!r}, "alias.txt")
    with open("alias.txt", "a") as f:
        f.write(" changed")
    print("linked")
except PermissionError:
    print("blocked")
with open("own.txt", "w") as f:
    f.write("own")
os.link("own.txt", "own-alias.txt")
print(open("own-alias.txt").read())
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.split() == ["blocked", "own"]
    assert victim.read_text() == "keep me" and victim.stat().st_nlink == 1
    assert f"os.link {victim}" in r.blocked
    assert list((tmp_path / "sandboxes").iterdir()) == []


def test_writing_opens_with_a_dir_fd_are_blocked(tmp_path):
    # A name relative to a `dir_fd` is not checked against that directory by the "open"
    # event: such writing opens are refused, the other calls check the `dir_fd`'s directory.
    (tmp_path / "keep.txt").write_text("keep me")
    code = f"""
import os
fd = os.open({str(tmp_path)!r}, os.O_RDONLY)
for action in (
    lambda: os.open("stray.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd),
    lambda: open("stray.txt", "w", opener=lambda p, f: os.open(p, f, dir_fd=fd)),
    lambda: os.open("keep.txt", os.O_RDWR, dir_fd=fd),
    lambda: os.mkdir("made", dir_fd=fd),
    lambda: os.remove("keep.txt", dir_fd=fd),
):
    try:
        action()
        print("done")
    except PermissionError:
        print("blocked")
print(os.read(os.open("keep.txt", os.O_RDONLY, dir_fd=fd), 100).decode())
here = os.open(".", os.O_RDONLY)
os.mkdir("sub", dir_fd=here)
print(os.path.isdir("sub"))
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.split() == ["blocked"] * 5 + ["keep", "me", "True"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "keep me"
    assert any(b.startswith("open stray.txt dir_fd=") for b in r.blocked), r.blocked


def test_environment_has_no_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-sandbox")
    monkeypatch.setenv("ALIGNLAB_SECRET", "nope")
    r = run_python("import json, os\nprint(json.dumps(dict(os.environ)))")
    env = json.loads(r.stdout)
    assert "OPENAI_API_KEY" not in env and "ALIGNLAB_SECRET" not in env
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"}
    assert "sk-not-for-the-sandbox" not in r.stdout


def test_the_temporary_folder_is_removed(tmp_path, monkeypatch):
    code = "import os\nos.mkdir('d')\nopen('d/x.txt', 'w').write('x')\nprint(os.getcwd())"
    work = run_python(code).stdout.strip()
    assert os.path.basename(work) == "work" and "alignlab-sandbox-" in work
    assert not os.path.exists(work) and not os.path.exists(os.path.dirname(work))
    monkeypatch.setenv("ALIGNLAB_SANDBOX_DIR", str(tmp_path))
    work = run_python(code + "\nos.chmod('d', 0)").stdout.strip()
    assert work.startswith(str(tmp_path)) and list(tmp_path.iterdir()) == []


def test_isolation_is_reported(monkeypatch):
    r = run_python("print(open('/proc/net/dev').read())")
    assert r.isolation == sandbox.isolation() and r.isolation in ISOLATIONS
    if r.isolation.startswith("unshare-rn"):  # a network namespace: the loopback only
        interfaces = [ln.split(":")[0].strip() for ln in r.stdout.splitlines() if ":" in ln]
        assert interfaces == ["lo"]
    monkeypatch.setattr(sandbox, "_unshare_prefix", lambda: ())
    r = run_python("import socket\nsocket.socket()")
    assert r.isolation == "audit+rlimits" and r.returncode == 1
    assert r.blocked == ["socket.__new__"]


def test_bad_arguments_name_the_problem():
    with pytest.raises(AlignlabError, match="memory_mb"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(AlignlabError, match="cpu_s"):
        SandboxLimits(cpu_s="5")
    with pytest.raises(AlignlabError, match="n_files"):
        SandboxLimits(n_files=True)
    with pytest.raises(AlignlabError, match="file_mb"):
        SandboxLimits(file_mb=2.5)
    with pytest.raises(AlignlabError, match="relative"):
        run_python("pass", files={"../up.txt": "x"})
    with pytest.raises(AlignlabError, match="main.py"):
        run_python("pass", files={"main.py": "x"})
    with pytest.raises(AlignlabError, match="timeout"):
        run_python("pass", timeout=0)
