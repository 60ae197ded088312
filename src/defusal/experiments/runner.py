"""Run a list of :class:`RunSpec` one after the other, resumably.

Each run owns the folder ``<out>/<experiment>/<run id>/``:

- ``spec.json``: the run specification;
- ``condition.json`` and ``init.pt``: the initial condition (radii before and after
  pre-training) and the weights training starts from, written before training;
- ``history.csv``, ``grad_norms.csv``, ``checkpoint.pt``, ``result.json``: written by
  ``defusal.train.train``;
- ``na.json`` instead, when the condition does not apply to the network.

A run is skipped when its ``na.json`` exists or its ``result.json`` reports every epoch done
(or a divergence, which ends training early). ``defusal.train`` rewrites ``result.json`` after
every epoch, so its mere presence does not mean the run finished. An unfinished run with a
``checkpoint.pt`` continues training from it; one with only ``init.pt`` starts training from
those weights without repeating the pre-training.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from defusal import io
from defusal.errors import DefusalError
from defusal.experiments.conditions import ConditionNotApplicable, apply_condition, build_model
from defusal.experiments.configs import RunSpec

logger = logging.getLogger(__name__)

TaskFactory = Callable[[str, str], Any]
ModelFactory = Callable[[RunSpec, Any], Any]
ConditionFn = Callable[[Any, RunSpec, Any], dict]
Trainer = Callable[..., Any]


@dataclass
class RunRecord:
    """Outcome of one run, read back from its folder.

    Attributes:
        spec: the run specification.
        run_dir: the run's folder.
        status: ``"done"`` or ``"n/a"``.
        result: contents of ``result.json`` (empty for n/a).
        condition: contents of ``condition.json`` (radii, pre-training time).
        history: rows of ``history.csv``, one per epoch, numbers as floats.
        grad_norms: rows of ``grad_norms.csv``, numbers as floats.
        reason: why the run is n/a.
    """

    spec: RunSpec
    run_dir: Path
    status: str
    result: dict[str, Any] = field(default_factory=dict)
    condition: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    grad_norms: list[dict[str, float]] = field(default_factory=list)
    reason: str | None = None


class Runner:
    """Executes runs; the task loader, model builder, condition and trainer can be replaced.

    Args:
        out_dir: results folder; each run writes into ``out_dir/<experiment>/<run id>/``.
        data_dir: data folder passed to ``defusal.tasks.load_task``.
        task_factory: ``(task name, size) -> Task``; default ``defusal.tasks.load_task``.
        model_factory: ``(spec, task) -> model``; default :func:`build_model`.
        condition_fn: ``(model, spec, task) -> record``; default :func:`apply_condition`.
        trainer: ``(model, task, config, out_dir, *, resume, progress)``; default
            ``defusal.train.train``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        data_dir: str | Path | None = None,
        task_factory: TaskFactory | None = None,
        model_factory: ModelFactory | None = None,
        condition_fn: ConditionFn | None = None,
        trainer: Trainer | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.data_dir = data_dir
        self.task_factory = task_factory or self._load_task
        self.model_factory = model_factory or build_model
        self.condition_fn = condition_fn or apply_condition
        self.trainer = trainer
        self._tasks: dict[tuple[str, str], Any] = {}

    def run_dir(self, spec: RunSpec) -> Path:
        """Return the folder of ``spec``."""
        return self.out_dir / spec.experiment / spec.run_id

    def task(self, name: str, size: str) -> Any:
        """Return the task ``name`` of ``size``, loaded once and cached."""
        key = (name, size)
        if key not in self._tasks:
            self._tasks[key] = self.task_factory(name, size)
        return self._tasks[key]

    def run_all(
        self, specs: Sequence[RunSpec], *, progress: bool = True, description: str = "runs"
    ) -> list[RunRecord]:
        """Run every spec not finished yet, in order, and return the records of all.

        Every task is loaded before the first run, so a missing dataset fails at once.
        """
        for spec in specs:
            self.task(spec.task, spec.task_size)
        records = []
        bar = tqdm(specs, desc=description, unit="run", disable=not progress, leave=True)
        for spec in bar:
            bar.set_postfix_str(spec.run_id[:48], refresh=False)
            records.append(self.run(spec))
        return records

    def run(self, spec: RunSpec) -> RunRecord:
        """Run ``spec`` unless finished; resume it from its checkpoint if interrupted."""
        run_dir = self.run_dir(spec)
        if is_finished(run_dir, spec):
            logger.info("skipping finished run %s", spec.run_id)
            return load_record(run_dir, spec)

        io.write_json(run_dir / "spec.json", spec.to_dict())
        task = self.task(spec.task, spec.task_size)
        model = self.model_factory(spec, task)
        checkpoint = run_dir / "checkpoint.pt"
        initial = run_dir / "init.pt"
        condition_file = run_dir / "condition.json"
        _discard_if_unreadable(checkpoint)
        _discard_if_unreadable(initial)
        resume = checkpoint.is_file() and condition_file.is_file()
        if resume:
            logger.info("resuming run %s from %s", spec.run_id, checkpoint)
        elif initial.is_file() and condition_file.is_file():
            model.load_state_dict(io.load_torch(initial))
        else:
            try:
                record = self.condition_fn(model, spec, task)
            except ConditionNotApplicable as reason:
                io.write_json(run_dir / "na.json", {"reason": str(reason)})
                return load_record(run_dir, spec)
            io.save_torch(initial, model.state_dict())
            io.write_json(condition_file, record)

        trainer = self.trainer or _default_trainer()
        model = fused_for_training(model)
        trainer(model, task, train_config(spec), run_dir, resume=resume, progress=False)
        if not is_finished(run_dir, spec):
            raise DefusalError(f"training of {spec.run_id} did not finish; see {run_dir}")
        return load_record(run_dir, spec)

    def _load_task(self, name: str, size: str) -> Any:
        from defusal.tasks import load_task

        return load_task(name, data_dir=self.data_dir, size=size, seed=0)


def _discard_if_unreadable(path: Path) -> None:
    """Delete a corrupt checkpoint so the run recomputes that part instead of failing."""
    if not path.is_file():
        return
    try:
        io.load_torch(path)
    except DefusalError as error:
        logger.warning("%s; deleting it and recomputing", error)
        path.unlink()


def fused_for_training(model: Any) -> Any:
    """Return a fused ``torch.nn.LSTM``/``GRU`` copy of an all-LSTM or all-GRU stack.

    Any other model is returned unchanged. The fused kernels train faster than the cell-by-cell
    stack and compute the same function (the conversion is exact), so pre-training uses the
    cells and training the fused copy.
    """
    from defusal.nets import GRUCell, LSTMCell, RecurrentStack
    from defusal.nets.convert import FusedRecurrentNetwork

    if type(model) is not RecurrentStack:
        return model
    for kind in (LSTMCell, GRUCell):
        if all(type(cell) is kind for cell in model.cells):
            return FusedRecurrentNetwork.from_stack(model)
    return model


def is_finished(run_dir: Path, spec: RunSpec) -> bool:
    """Return whether the run in ``run_dir`` is n/a, diverged or trained for every epoch."""
    if (run_dir / "na.json").is_file():
        return True
    result = _read_json(run_dir / "result.json")
    if not result:
        return False
    return bool(result.get("diverged")) or result.get("epochs_completed", 0) >= spec.training.epochs


def train_config(spec: RunSpec) -> Any:
    """Return the ``defusal.train.TrainConfig`` of ``spec`` (its seed and training settings)."""
    from defusal.train import TrainConfig

    values = dataclasses.asdict(spec.training)
    values["seed"] = spec.seed
    accepted = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = sorted(key for key, value in values.items() if key not in accepted and value)
    if missing:
        raise DefusalError(f"TrainConfig has no field {', '.join(missing)}; fix the config")
    return TrainConfig(**{key: value for key, value in values.items() if key in accepted})


def load_record(run_dir: str | Path, spec: RunSpec | None = None) -> RunRecord:
    """Read a run folder back into a :class:`RunRecord`."""
    run_dir = Path(run_dir)
    if spec is None:
        spec = spec_from_dict(_read_json(run_dir / "spec.json"))
    if (run_dir / "na.json").is_file():
        reason = _read_json(run_dir / "na.json").get("reason")
        return RunRecord(spec, run_dir, "n/a", reason=reason)
    return RunRecord(
        spec,
        run_dir,
        "done",
        result=_read_json(run_dir / "result.json"),
        condition=_read_json(run_dir / "condition.json"),
        history=read_csv(run_dir / "history.csv"),
        grad_norms=read_csv(run_dir / "grad_norms.csv"),
    )


def spec_from_dict(data: dict[str, Any]) -> RunSpec:
    """Rebuild a :class:`RunSpec` from :meth:`RunSpec.to_dict` output."""
    from defusal.experiments.configs import Condition, LSCSpec, TrainingSpec

    data = dict(data)
    condition = dict(data["condition"])
    if condition.get("lsc") is not None:
        lsc = dict(condition["lsc"])
        lsc["options"] = tuple(tuple(item) for item in lsc.get("options", ()))
        condition["lsc"] = LSCSpec(**lsc)
    data["condition"] = Condition(**condition)
    data["training"] = TrainingSpec(**data["training"])
    return RunSpec(**data)


def read_csv(path: Path) -> list[dict[str, float]]:
    """Read a CSV file of numbers into rows of floats; text cells are kept as text."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            rows.append({key: _number(value) for key, value in row.items()})
    return rows


def _number(value: str) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DefusalError(f"{path} is corrupt ({error}); delete it to redo the run") from None


def _default_trainer() -> Trainer:
    from defusal.train import train

    if "resume" not in inspect.signature(train).parameters:
        raise DefusalError("defusal.train.train does not accept resume=; update defusal.train")
    return train
