"""TensorBoard event files of a run's trainings and evaluations, written with the report.

Layout, under the report folder (rebuilt whole with it)::

    tensorboard/<category>/<row>/seed<seed>/events.out.tfevents.*
        train/loss, train/acc_negative, train/acc_normal, train/lr, train/images_per_s   per step
        eval/<metric>                                                                    at the last step

Open with ``tensorboard --logdir reports/<run>/tensorboard``: each evaluation is a run of TensorBoard's,
named by its path. Written from the stored training logs, so reused trainings have their curves too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cutswap.track.records import TrackedEvaluation

#: The folder under the report folder.
FOLDER = "tensorboard"


def write_events(folder: Path, records: Sequence[TrackedEvaluation]) -> list[Path]:
    """One event folder per record (module docstring); returns the folders written.

    Raises:
        ModuleNotFoundError: without TensorBoard (``pip install -e '.[tracking]'``); the run's checks
            refuse ``tracking.tensorboard`` before it starts in that case.
    """
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

    written = []
    for record in records:
        out = Path(folder) / record.category / record.row / f"seed{record.seed}"
        with SummaryWriter(log_dir=str(out)) as writer:
            last = 0
            if record.log.size:
                step_at = record.log_columns.index("step") if "step" in record.log_columns else None
                for i, line in enumerate(record.log):
                    step = int(line[step_at]) if step_at is not None else i
                    for column, value in zip(record.log_columns, line, strict=True):
                        if column != "step":
                            writer.add_scalar(f"train/{column}", float(value), step)
                    last = step
            for metric, value in record.metrics.items():
                writer.add_scalar(f"eval/{metric}", value, last)
        written.append(out)
    return written
