"""A real MLflow tracking server for tests: ``mlflow server`` as a separate process on 127.0.0.1.

It runs from an environment of its own (``make mlflow-server`` builds ``.venv-mlflow-server``; or
``CUTSWAP_MLFLOW_SERVER`` names an ``mlflow`` executable): full MLflow pins packages the project's
environment keeps newer, while the client side (``mlflow-skinny``, the ``tracking`` extra) lives in the
project's. Its backend store (SQLite) and artifacts are in a temporary folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.s3 import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Where ``make mlflow-server`` puts the server's environment.
DEFAULT = ROOT / ".venv-mlflow-server" / "bin" / "mlflow"


def server_executable() -> Path | None:
    """The ``mlflow`` executable of the server's own environment, None where it is not built."""
    path = Path(os.environ.get("CUTSWAP_MLFLOW_SERVER", DEFAULT))
    return path if path.is_file() else None


class MlflowServer:
    """``mlflow server`` on a free loopback port, its stores under ``folder``; ``uri`` reaches it."""

    def __init__(self, executable: Path, folder: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.log = (folder / "server.log").open("w")
        self.process = subprocess.Popen(
            [str(executable), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        self._wait(folder)

    def _wait(self, folder: Path, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
