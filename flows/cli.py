"""The ``cutswap`` command (the console script): ``run`` plus the library's report commands.

``run`` checks every input (``flows.launch.check``) before it imports the flow and so Prefect: a bad
setting or dataset path ends at once. The other commands are ``cutswap.app.cli``'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from cutswap.app import cli
from flows import launch


def _flow() -> Callable[..., str]:
    from flows.benchmark import cutswap

    return cutswap


def _run(args: argparse.Namespace) -> int:
    return launch.run(args, _flow, owns_process=True)


RUN = cli.Command(
    "run",
    "run the benchmark in-process (the Prefect flow; a temporary local API)",
    "cutswap run --preset configs/demo.yaml --set train.steps=50 --stages train,evaluate,report",
    launch.add_run_arguments,
    _run,
)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, extra=[RUN])


if __name__ == "__main__":
    sys.exit(main())
