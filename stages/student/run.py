"""Train one arm and write its folder: model/, metrics.json, test_predictions.parquet, live/, calibration.csv,
confusion.csv.

The folder is built in a temporary sibling and renamed into place when complete (main process only), so DVC
never sees half an arm. An arm whose inputs this configuration cannot have (`Unavailable`) gets its folder all the
same, saying so (stages/student/unavailable.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stages.core.atomic import atomic_path
from stages.core.errors import Unavailable
from stages.core.predictions import write_predictions
from stages.student.config import TrainPaths, TrainSetup
from stages.student.evaluation import final_metrics, write_plots
from stages.student.loop import train_steps
from stages.student.model import save_student
from stages.student.setup import Run, prepare_run
from stages.student.unavailable import unavailable_metrics, write_unavailable


def run_arm(setup: TrainSetup, paths: TrainPaths) -> dict[str, Any]:
    """Train the arm and write `paths.out` atomically (main process only); returns its final metrics.

    Under a launcher every process returns the main process's metrics, once the arm folder is in place.
    """
    from accelerate.utils import broadcast_object_list

    try:
        run = prepare_run(setup, paths)
    except Unavailable as error:  # every process reads the same inputs, so all of them get here
        if int(os.environ.get("RANK", "0")) == 0:  # no process group yet: the launcher's rank says who writes
            return write_unavailable(setup, paths, str(error))
        return unavailable_metrics(str(error))
    metrics = None
    if not run.accelerator.is_main_process:
        train_steps(run, setup, live=None)
        return broadcast_object_list([metrics])[0]  # waits for the main process to finish writing
    with atomic_path(paths.out, directory=True) as out:
        metrics = train_and_write(run, setup, out)
    return broadcast_object_list([metrics])[0]


def train_and_write(run: Run, setup: TrainSetup, out: Path) -> dict[str, float]:
    """Main process: train with the learning curves in `out`/live, then write everything else into `out`."""
    from dvclive import Live

    # DVCLive writes into its folder while training: it lives inside the temporary arm folder, renamed at the end.
    # Its curves (live/plots/metrics/*.tsv, hashed in dvc.lock) hold step and value only: log_metric adds a
    # timestamp column only when asked (timestamp=True), so the same run gives the same bytes.
    live = Live(dir=str(out / "live"), save_dvc_exp=False, dvcyaml=False)
    live.step = 1  # the curves' step = optimiser steps completed
    train_steps(run, setup, live)
    live.end()
    student = run.accelerator.unwrap_model(run.modules.model)
    readout, batch_size = run.context.readout, setup.train.batch_size
    metrics, predictions = final_metrics(student, run.evaluation, readout, batch_size)
    save_student(run.accelerator, run.modules, readout.tokenizer, out, setup.describe())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    test = run.evaluation["test"]
    write_predictions(out / "test_predictions.parquet", test.ids, test.answers, predictions, {"arm": setup.arm})
    write_plots(out, student, test, readout, batch_size)
    return metrics
