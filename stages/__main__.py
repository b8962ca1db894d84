"""Entry point: `python -m stages <stage>` (what dvc.yaml runs) and the `probekd` console script.

Only the requested stage's module is imported, so a stage's code dependencies in dvc.yaml are exactly
what it imports, and `python -m stages prepare` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import logging
import sys

try:
    import typer
except ModuleNotFoundError as error:  # dvc runs `python` from PATH: usually the environment is not active
    sys.exit(
        f"{sys.executable} cannot import {error.name}: run dvc with probekd's environment active "
        "(`. .venv/bin/activate`), or `pip install -e .` into this python"
    )

from stages.core.config import parameter_help
from stages.core.launch import relaunch_if_requested

# stage name -> (module, one-line help). Keep in step with dvc.yaml.
STAGES: dict[str, tuple[str, str]] = {
    "prepare": ("stages.prepare", "Load a dataset into the canonical schema; write labeled/transfer/val/test."),
    "models": ("stages.models", "Resolve the teacher or student (hub id, local path, or pretrain the builtin)."),
    "extract": ("stages.extract", "Cache the teacher's hidden states of every layer into a zarr store."),
    "probe": ("stages.probe", "Fit a probe per layer with cross-fitting; per-layer metrics and plots."),
    "label": ("stages.label", "Write probe, teacher-letter and teacher-cloze labels; their quality; every readout."),
    "train": ("stages.train", "Train one student arm (gold, logit_kd, cloze_kd, probe_kd, hld, oracle)."),
    "summarize": ("stages.summarize", "Every arm and teacher readout on test, with intervals, PGR and differences."),
    # the pre-training study (a second pipeline in the same dvc.yaml)
    "corpus": ("stages.corpus", "Pack the study's corpus into train/val sequences of the teacher's tokens."),
    "teacher_signal": ("stages.teacher_signal", "Cache the teacher's top-k log-probs and hidden states over it."),
    "pretrain": ("stages.pretrain", "Pre-train one student arm from scratch (nll, kd, hldc, hldf)."),
    "pretrain_eval": ("stages.pretrain_eval", "One arm's held-out log-perplexity and zero-shot cloze accuracy."),
    "pretrain_summary": ("stages.pretrain_summary", "Every arm's log-perplexity, downstream accuracy and FLOPs."),
}


def build_app(requested: str | None) -> typer.Typer:
    app = typer.Typer(
        name="probekd",
        help="Probe-KD: distil a teacher into a student through probes on its hidden states.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def pipeline() -> None:
        """Probe-KD pipeline stages; dvc.yaml runs them as `python -m stages <stage>`."""
        # A callback keeps typer in multi-command mode even when only one stage is registered.

    names = [requested] if requested in STAGES else list(STAGES)
    for name in names:
        module_name, help_text = STAGES[name]
        module = importlib.import_module(module_name)
        # The command's docstring is its --help; the parameters it reads, with their documentation, the epilog.
        epilog = parameter_help(module.PARAMS)
        app.command(name=name, help=module.main.__doc__ or help_text, epilog=epilog)(module.main)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    relaunch_if_requested(sys.argv[1:])
    requested = sys.argv[1] if len(sys.argv) > 1 else None
    build_app(requested)()


if __name__ == "__main__":
    main()
