"""``scripts/prefect-local.sh`` (``make server``, ``make server-stop``): nothing started twice, a port held by
another program named at once, pid files trusted only for our own processes, and a stop that leaves no
Prefect process and a free port. Only the last test starts a real server (``slow``); the others end before
any server would answer, in seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_deployments import _clean_env, _copy_project, _listening

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prefect-local.sh"
pytestmark = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="reads processes from /proc")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _script(
    command: str, home: Path, port: int, venv: Path = Path(sys.prefix)
) -> subprocess.CompletedProcess:
    """The script of this tree with its own PREFECT_HOME and port (never the developer's .prefect or 4200)."""
    env = {**_clean_env(), "PREFECT_HOME": str(home), "CUTSWAP_PREFECT_PORT": str(port), "VENV": str(venv)}
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=120
    )


def _prefect_processes(prefect: Path) -> dict[int, str]:
    """Every process running ``prefect`` (this path) and its command line."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if str(prefect).encode() in args:
            found[int(cmdline.parent.name)] = b" ".join(args).decode(errors="replace")
    return found


def test_a_port_held_by_another_program_is_named_with_its_pid_within_seconds(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        began = time.monotonic()
        result = _script("start", tmp_path, port)
        took = time.monotonic() - began
    assert result.returncode != 0, result.stdout
    assert took < 20, f"{took:.0f} s"  # was 184 s: the whole wait for a server that had died at once
    message = result.stderr
    assert f"port {port} " in message and f"pid {os.getpid()} " in message, message
    assert "CUTSWAP_PREFECT_PORT=" in message and "Prefect server" not in message, message
    assert not (tmp_path / "cutswap-server.pid").exists() and not (tmp_path / "server.log").exists()


def test_pid_files_naming_other_processes_are_not_trusted(tmp_path):
    """A pid reused by another program after a reboot or crash: neither reported as our server nor killed."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        for role in ("server", "worker"):
            (tmp_path / f"cutswap-{role}.pid").write_text(f"{other.pid}\n")
        result = _script("stop", tmp_path, _free_port())
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Nothing to stop"), result.stdout
        assert f"named pid {other.pid}, which is not this project's Prefect server" in result.stderr
        assert other.poll() is None  # still running
        assert not list(tmp_path.glob("cutswap-*.pid"))
    finally:
        other.kill()
        other.wait()


def test_stop_finds_our_processes_without_pid_files_and_only_ours(tmp_path):
    """What older versions left running (a second `make server` overwrote the pid files): found by command
    line and PREFECT_HOME, stopped with their process groups; another home's are left alone."""
    prefect = Path(sys.prefix) / "bin" / "prefect"  # what the script runs, as it names it
    home, other_home = tmp_path / "home", tmp_path / "other"

    def fake(role_args: list[str], prefect_home: Path) -> subprocess.Popen:
        """A process whose command line is the script's server or worker (a sleeping Python child too)."""
        code = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
        env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
        return subprocess.Popen(
            [sys.executable, "-c", code, str(prefect), *role_args], env=env, start_new_session=True
        )

    server = fake(["server", "start", "--host", "127.0.0.1", "--port", "4200"], home)
    worker = fake(["worker", "start", "--pool", "cutswap"], home)
    others = fake(["worker", "start", "--pool", "cutswap"], other_home)
    try:
        time.sleep(0.5)  # their sleeping children started
        result = _script("stop", home, _free_port())
        assert result.returncode == 0, result.stderr
        assert f"worker (pid {worker.pid}), server (pid {server.pid})" in result.stdout, result.stdout
        assert server.wait(timeout=5) is not None and worker.wait(timeout=5) is not None
        assert others.poll() is None
        for pid in (server.pid, worker.pid):  # the children went with their process group
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)
    finally:
        for process in (server, worker, others):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_server_that_exits_while_starting_is_reported_at_once_with_its_log(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    prefect = venv / "bin" / "prefect"
    prefect.write_text(
        "#!/bin/sh\necho 'sqlite3.OperationalError: unable to open database file' >&2\nexit 1\n"
    )
    prefect.chmod(0o755)
    home = tmp_path / "home"
    began = time.monotonic()
    result = _script("start", home, _free_port(), venv=venv)
    assert result.returncode != 0 and time.monotonic() - began < 20
    assert "the Prefect server (pid " in result.stderr and "exited while starting" in result.stderr
    assert "unable to open database file" in result.stderr and str(home / "server.log") in result.stderr
    assert not (home / "cutswap-server.pid").exists()


@pytest.mark.slow
def test_make_server_twice_then_server_stop_leaves_no_prefect_process_and_a_free_port(tmp_path):
    root = tmp_path / "project"
    _copy_project(root)
    prefect = root / ".venv" / "bin" / "prefect"
    port = _free_port()
    env = {**_clean_env(), "CUTSWAP_PREFECT_PORT": str(port)}

    def make(target: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", target], cwd=root, env=env, capture_output=True, text=True, timeout=400
        )

    home = root / ".prefect"
    timings = {}
    try:
        began = time.monotonic()
        first = make("server")
        timings["first"] = time.monotonic() - began
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert f"http://127.0.0.1:{port}" in first.stdout
        pids = {role: int((home / f"cutswap-{role}.pid").read_text()) for role in ("server", "worker")}
        running = _prefect_processes(prefect)
        assert set(pids.values()) <= set(running), running

        began = time.monotonic()
        second = make("server")
        timings["second"] = time.monotonic() - began
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "already running" in second.stdout and "nothing started" in second.stdout, second.stdout
        assert f"pid {pids['server']}" in second.stdout and f"worker pid {pids['worker']}" in second.stdout
        assert {role: int((home / f"cutswap-{role}.pid").read_text()) for role in pids} == pids
        assert _prefect_processes(prefect) == running  # nothing started twice
    finally:
        began = time.monotonic()
        stopped = make("server-stop")
        timings["stop"] = time.monotonic() - began
        for name in ("server.log", "worker.log"):
            if (home / name).exists():
                print(f"--- {name}\n{(home / name).read_text()[-3000:]}")
        print("make server, again, server-stop: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    assert stopped.returncode == 0, stopped.stderr
    assert f"server (pid {pids['server']})" in stopped.stdout, stopped.stdout
    assert f"worker (pid {pids['worker']})" in stopped.stdout, stopped.stdout
    assert _prefect_processes(prefect) == {}
    assert not _listening(port)
    assert not list(home.glob("cutswap-*.pid"))
    again = make("server-stop")
    assert again.returncode == 0 and "\nNothing to stop: " in again.stdout, again.stdout
