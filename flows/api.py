"""The Prefect API a command-line run talks to: the configured one, or a temporary one the run owns.

Prefect starts its own temporary server when no API is configured, as a child that outlives the run: a
SIGKILL of the run leaves it serving under init, and a Ctrl-C or SIGTERM to the run's process group stops
it before the run has reported its own end, which the run then retries for minutes. So a run without a
configured API starts its server itself (``run_api``):

* on a socket the run has already bound on 127.0.0.1 (no port to race for), in a session of its own, so a
  signal to the run's process group reaches the run and not its server;
* the server stops when the run's process ends, however it ends: the kernel sends it SIGTERM (Linux's
  parent-death signal), and a watchdog thread that sees its parent change stops it on any POSIX system;
* so it serves until the run's last state and events are sent, at the run's exit, and no longer.

A configured API (``PREFECT_API_URL``, or the active profile: ``make server`` activates ``cutswap-local``)
is used as it is, once it answers; one that does not answer is an error naming it and the fix.

    python -m flows.api --fd N --parent PID      the server process (``run_api`` starts it)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cutswap import atomic
from cutswap.errors import CutswapError

#: Seconds the server has to finish its requests once its run has ended.
_GRACE = 5.0


def _answers(url: str, timeout: float = 3.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _start_server(output: IO[bytes]) -> tuple[subprocess.Popen, str]:
    """The server process and its API URL; its output goes to ``output`` (read if it fails to start)."""
    from prefect.settings import get_current_settings

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_UI_ENABLED": "0",  # what Prefect's own temporary server sets
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    fd = listener.fileno()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.api", "--fd", str(fd), "--parent", str(os.getpid())],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    finally:
        listener.close()  # the server holds its own copy
    return process, f"http://127.0.0.1:{port}/api"


def _wait_until_up(process: subprocess.Popen, url: str, output: IO[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers(url, timeout=2.0):
            return
        time.sleep(0.2)
    process.kill()
    output.seek(0)
    tail = output.read().decode(errors="replace").strip().splitlines()[-5:]
    raise CutswapError(
        f"the run's temporary Prefect API did not start within {timeout:.0f} s"
        + (f" (it said: {' | '.join(tail)})" if tail else "")
        + "; raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a slow machine, or start a server "
        "with `make server`"
    )


@contextlib.contextmanager
def run_api(stop_on_exit: bool = False) -> Iterator[str]:
    """The API URL this process's flow runs report to, set for Prefect.

    Args:
        stop_on_exit: stop an owned server when the block ends. False (a command that ends its process
            after the run): it serves, and is this process's API (``PREFECT_API_URL``, inherited by
            child processes), until the process exits, for what Prefect still sends at exit.

    Raises:
        CutswapError: the configured API does not answer, or the temporary one did not start.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    configured = settings.api.url
    if configured:
        if not _answers(configured):
            raise CutswapError(
                f"the Prefect API at {configured} does not answer (set by PREFECT_API_URL or the active "
                f"profile, {settings.profiles_path}); start it (`make server`), or run without it "
                "(`prefect profile use ephemeral`, or unset PREFECT_API_URL)"
            )
        yield configured
        return
    # Runs starting at once on a new Prefect home would each migrate its database at the same time, and
    # all but one fail: one server starts at a time (its migrations done once it answers).
    with tempfile.TemporaryFile() as output, atomic.locked(Path(settings.home) / "cutswap-api", "starting"):
        process, url = _start_server(output)
        _wait_until_up(process, url, output, settings.server.ephemeral.startup_timeout_seconds)
    yield from _owned(process, url, stop_on_exit)


def _owned(process: subprocess.Popen, url: str, stop_on_exit: bool) -> Iterator[str]:
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        if not stop_on_exit:
            # For the rest of the process: what Prefect sends at exit must reach this server too.
            os.environ["PREFECT_API_URL"] = url
            refresh_global_settings_context()
            yield url
            return
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if stop_on_exit or process.poll() is not None:
            process.terminate()
            try:
                process.wait(_GRACE + 2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the server process ----------------------------------------------------------------------------------
def _die_with(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux); the watchdog covers other systems."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request
        os._exit(0)


def serve(fd: int, parent: int) -> None:
    """Serve Prefect's API on the listening socket ``fd`` until ``parent`` dies (or SIGTERM)."""
    _die_with(parent)
    import uvicorn

    config = uvicorn.Config(
        "prefect.server.api.server:create_app",
        factory=True,
        log_level="error",
        lifespan="on",
        timeout_graceful_shutdown=int(_GRACE),
    )
    server = uvicorn.Server(config)

    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        server.should_exit = True
        time.sleep(_GRACE * 2)
        os._exit(0)  # shutdown hung

    threading.Thread(target=watchdog, daemon=True, name="parent-watchdog").start()
    server.run(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.api", description="a run's own Prefect API")
    parser.add_argument("--fd", type=int, required=True, help="listening socket inherited from the run")
    parser.add_argument("--parent", type=int, required=True, help="the run's pid: serve while it lives")
    args = parser.parse_args()
    serve(args.fd, args.parent)
