"""A Dask scheduler and named workers as separate processes on loopback, each worker with its own working
folder, HOME, TORCH_HOME, TMPDIR and cache, and, where the machine allows (root and ``unshare``), a private
mount namespace in which a given folder (the flow's) is an empty tmpfs: workers that share no disk with
the flow. Used by tests/e2e/test_distributed.py and benchmarks/bench_storage.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.s3 import free_port

HIDE = shutil.which("unshare") is not None and os.geteuid() == 0


class Topology:
    """A scheduler and named workers on loopback, started here and stopped at the end."""

    def __init__(self, base: Path, hidden: Path, env: dict[str, str]) -> None:
        self.base, self.hidden, self.env = base, hidden, env
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, argv: list[str], hide: bool) -> None:
        home = self.base / name
        for sub in ("home", "torch", "tmp", "cache"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.env,
            "HOME": str(home / "home"),
            "TORCH_HOME": str(home / "torch"),
            "TMPDIR": str(home / "tmp"),
            "XDG_CACHE_HOME": str(home / "cache"),
        }
        if hide and HIDE:  # the flow's folder is an empty tmpfs in this process's view
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    f'mount -t tmpfs tmpfs "{self.hidden}" && exec "$@"', "sh", *argv]  # fmt: skip
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=home,
            env=env,
            stdout=open(home / "out.log", "w"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, workers: list[str]) -> Topology:
        dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
        self._start(
            "scheduler", [*dask, "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"], False
        )
        for name in workers:
            self._start(name, [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                               "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                               "--host", "127.0.0.1"], True)  # fmt: skip
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(len(workers), timeout=120)
        return self

    def worker_pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.processes.items() if n != "scheduler"}

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(
            f"--- {n}\n{(self.base / n / 'out.log').read_text()[-3000:]}" for n in self.processes
        )
