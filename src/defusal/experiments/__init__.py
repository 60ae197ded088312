"""The experiments of the LSC study as named, declarative grids, and the reproduce job.

- :mod:`~defusal.experiments.configs`: dataclasses for runs, conditions and grids.
- :mod:`~defusal.experiments.catalog`: the named experiments ``rnn``, ``lru`` and ``ffn``.
- :mod:`~defusal.experiments.conditions`: initialisations, peer methods and LSC pre-training.
- :mod:`~defusal.experiments.runner`: resumable execution, one folder per run.
- :mod:`~defusal.experiments.report`: summary tables, plots and the Markdown report.
- :mod:`~defusal.experiments.reproduce`: the job behind ``defusal reproduce``.
"""

from defusal.experiments.catalog import EXPERIMENTS, JOBS, experiment
from defusal.experiments.configs import (
    Condition,
    Experiment,
    Grid,
    LSCSpec,
    NotApplicable,
    RunSpec,
    TrainingSpec,
)
from defusal.experiments.reproduce import ReproduceResult, reproduce
from defusal.experiments.runner import Runner, RunRecord, load_record

__all__ = [
    "EXPERIMENTS",
    "JOBS",
    "Condition",
    "Experiment",
    "Grid",
    "LSCSpec",
    "NotApplicable",
    "ReproduceResult",
    "RunRecord",
    "RunSpec",
    "Runner",
    "TrainingSpec",
    "experiment",
    "load_record",
    "reproduce",
]
