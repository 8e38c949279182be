"""The sandbox of the code-producing task families: limits, blocked calls, clean-up."""

import json
import os
import signal

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


def test_timeout_kills_the_process_group():
    code = "import os\nprint(os.getpgrp(), flush=True)\nwhile True:\n    pass"
    r = run_python(code, timeout=1.5, limits=SandboxLimits(cpu_s=30))
    assert r.timed_out and r.returncode == -signal.SIGKILL
    pgid = int(r.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


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
    assert r.stdout.split() == ["blocked"] * 4 + ["fine", "True"]
    assert not stray.exists() and keep.read_text() == "keep me"
    assert f"open {stray}" in r.blocked and f"os.remove {keep}" in r.blocked


def test_network_and_processes_are_blocked():
    code = """
import os, socket, subprocess
for action in (
    lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
    lambda: subprocess.run(["true"]),
    lambda: os.system("true"),
    lambda: os.fork(),
    lambda: os.execv("/bin/true", ["true"]),
    lambda: os.posix_spawn("/bin/true", ["true"], {}),
):
    try:
        action()
        print("ran")
    except PermissionError:
        print("blocked")
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.split() == ["blocked"] * 6
    names = {b.split()[0] for b in r.blocked}
    assert {"subprocess.Popen", "os.system", "os.fork", "os.exec", "os.posix_spawn"} <= names
    assert any(n.startswith("socket.") for n in names)


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
