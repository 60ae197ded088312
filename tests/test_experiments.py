"""Experiment grids, the resumable runner and the report writer, on a tiny in-memory task."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from defusal.errors import DefusalError
from defusal.experiments import catalog
from defusal.experiments.conditions import applicability
from defusal.experiments.configs import (
    Condition,
    Experiment,
    Grid,
    LSCSpec,
    RunSpec,
    TrainingSpec,
)
from defusal.experiments.report import (
    experiment_section,
    format_mean_std,
    summarize,
)
from defusal.experiments.runner import (
    Runner,
    RunRecord,
    is_finished,
    load_record,
    spec_from_dict,
)
from defusal.tasks.base import TensorTask
from defusal.train import train

DEFAULT = Condition("default")
LSC_ONE = Condition("lsc-1", lsc=LSCSpec(target=1.0))
LSC_HALF = Condition("lsc-0.5", lsc=LSCSpec(target=0.5))
IDENTITY = Condition("identity", init="identity")
TRAINING = TrainingSpec(epochs=3, batch_size=16, lr=1e-2)


def toy_task() -> TensorTask:
    """Three Gaussian classes in four dimensions, 96/32/32 examples."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 4, generator=generator) * 2
    inputs, targets = {}, {}
    for split, count in (("train", 96), ("valid", 32), ("test", 32)):
        labels = torch.arange(count) % 3
        inputs[split] = centres[labels] + torch.randn(count, 4, generator=generator)
        targets[split] = labels
    return TensorTask(
        name="toy",
        kind="classification",
        input_size=4,
        output_size=3,
        sequence_length=0,
        inputs=inputs,
        targets=targets,
    )


def toy_model(spec: RunSpec, task) -> nn.Module:
    torch.manual_seed(spec.seed)
    return nn.Sequential(nn.Linear(task.input_size, 8), nn.Tanh(), nn.Linear(8, task.output_size))


def toy_condition(model, spec: RunSpec, task) -> dict:
    """Radii as LSC would record them: two layers, target from the condition."""
    record = {
        "radii_before": {"time": [1.4, 1.2], "depth": [0.8]},
        "radii_after": {"time": [1.4, 1.2], "depth": [0.8]},
        "targets": {},
        "pretrain_seconds": 0.0,
    }
    if spec.condition.lsc is not None:
        target = spec.condition.lsc.target
        record["radii_after"] = {"time": [target + 0.01, target - 0.03], "depth": [target + 0.2]}
        record["targets"] = {"time": target, "depth": target}
        record["pretrain_seconds"] = 1.5
    return record


class Counter:
    """Counts calls of a wrapped function."""

    def __init__(self, function):
        self.function = function
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.function(*args, **kwargs)


def toy_runner(out: Path, *, trainer=train, condition=toy_condition) -> Runner:
    task = toy_task()
    return Runner(
        out,
        task_factory=lambda name, size: task,
        model_factory=toy_model,
        condition_fn=condition,
        trainer=trainer,
    )


def toy_experiment(seeds: int = 2) -> Experiment:
    grid = Grid(
        tasks=("toy",),
        networks=("ffn",),
        depths=(2,),
        conditions=(DEFAULT, LSC_ONE, LSC_HALF),
        training={"toy": TRAINING},
        seeds=seeds,
        widths={"*": 8},
    )
    return Experiment("toy", "toy experiment", quick=(grid,), full=(grid,))


def test_grid_size_is_product():
    grid = Grid(
        tasks=("slmnist", "fsdd"),
        networks=("gru", "relu_rnn"),
        depths=(2, 5),
        conditions=(DEFAULT, LSC_ONE, IDENTITY),
        training={"*": TRAINING},
        seeds=3,
        lrs=(1e-2, 1e-3),
        clip_norms=(None, 1.0),
    )
    runs, skipped = grid.expand("x")
    # identity applies to relu_rnn only: the gru cells with identity are n/a.
    applicable_cells = 2 * 2 * 2 * 3 - 2 * 1 * 2 * 1
    assert len(runs) == applicable_cells * 3 * 2 * 2
    assert len(skipped) == 2 * 1 * 2


def test_grid_seeds_override():
    grid = Grid(
        tasks=("slmnist",),
        networks=("gru",),
        depths=(5,),
        conditions=(DEFAULT,),
        training={"*": TRAINING},
        seeds=4,
    )
    runs, _ = grid.expand("x", seeds=2)
    assert sorted(run.seed for run in runs) == [0, 1]


def test_grid_rejects_zero_seeds():
    grid = Grid(("slmnist",), ("gru",), (5,), (DEFAULT,), {"*": TRAINING})
    with pytest.raises(DefusalError, match="seeds"):
        grid.expand("x", seeds=0)


def test_run_ids_unique_in_catalog():
    for experiment in catalog.EXPERIMENTS.values():
        for size in ("quick", "full"):
            runs, _ = experiment.expand(size)
            ids = [run.run_id for run in runs]
            assert len(set(ids)) == len(ids), (experiment.name, size)


def test_run_id_is_hash_of_spec():
    runs, _ = catalog.RNN.expand("quick")
    spec = runs[0]
    payload = json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()
    expected_suffix = hashlib.sha1(payload).hexdigest()[:8]
    assert spec.run_id.endswith("-" + expected_suffix)


def test_run_id_stable_across_expansions():
    first, _ = catalog.LRU.expand("full")
    second, _ = catalog.LRU.expand("full")
    assert [r.run_id for r in first] == [r.run_id for r in second]


def test_run_id_changes_with_setting():
    runs, _ = catalog.RNN.expand("quick")
    spec = runs[0]
    other = RunSpec(**{**spec.__dict__, "training": TrainingSpec(epochs=99, batch_size=1, lr=1)})
    assert other.run_id != spec.run_id


def test_run_id_is_a_folder_name():
    for experiment in catalog.EXPERIMENTS.values():
        runs, _ = experiment.expand("full")
        for run in runs:
            assert re.fullmatch(r"[A-Za-z0-9._-]+", run.run_id), run.run_id


def test_spec_round_trips_through_json():
    runs, _ = catalog.LRU.expand("full")
    for spec in runs[:8]:
        data = json.loads(json.dumps(spec.to_dict()))
        assert spec_from_dict(data) == spec


def test_quick_rnn_has_three_conditions_at_depth5():
    runs, _ = catalog.RNN.expand("quick")
    assert {run.condition.name for run in runs} == {"default", "lsc-1", "lsc-0.5"}
    assert {run.depth for run in runs} == {5}
    assert {run.task for run in runs} == {"slmnist"}


def test_full_rnn_grid_size():
    runs, skipped = catalog.RNN.expand("full")
    kinds = catalog.RNN_KINDS
    conditions = catalog.RNN_FULL_CONDITIONS
    cells = list(itertools.product(("slmnist", "fsdd", "ptb"), kinds, (2, 5), conditions))
    applicable = [cell for cell in cells if applicability(cell[3], cell[1]) is None]
    assert len(runs) == len(applicable) * 4
    assert len(skipped) == len(cells) - len(applicable)


def test_full_lru_grid_clips_and_targets():
    runs, _ = catalog.LRU.expand("full")
    labels = {run.label for run in runs}
    expected = {
        f"{name}{clip}"
        for name in ("default", "lsc-1", "lsc-0.5", "lsc-unbalanced")
        for clip in ("", "+clip")
    }
    assert labels == expected
    assert {run.depth for run in runs} == {3, 6}


def test_applicability_of_peers():
    lsuv = Condition("lsuv", peer="lsuv")
    assert applicability(lsuv, "ffn") is None
    assert "Linear" in applicability(lsuv, "gru")
    assert applicability(IDENTITY, "relu_rnn") is None
    assert applicability(IDENTITY, "lstm") is not None
    assert applicability(Condition("u", lsc=LSCSpec(target="unbalanced")), "gru") is not None


def test_applicability_unknown_network():
    with pytest.raises(DefusalError, match="unknown network"):
        applicability(DEFAULT, "transformer")


def test_unknown_experiment_message():
    with pytest.raises(DefusalError, match="unknown experiment 'cnn'"):
        catalog.experiment("cnn")


def test_runner_skips_finished_runs(tmp_path):
    runs, _ = toy_experiment(seeds=1).expand("quick")
    trainer = Counter(train)
    condition = Counter(toy_condition)
    first = toy_runner(tmp_path, trainer=trainer, condition=condition).run_all(runs, progress=False)
    assert len(trainer.calls) == len(runs)
    assert len(condition.calls) == len(runs)

    again_trainer = Counter(train)
    again_condition = Counter(toy_condition)
    second = toy_runner(tmp_path, trainer=again_trainer, condition=again_condition).run_all(
        runs, progress=False
    )
    assert again_trainer.calls == []
    assert again_condition.calls == []
    assert [r.result for r in second] == [r.result for r in first]


def test_runner_writes_run_folder(tmp_path):
    runs, _ = toy_experiment(seeds=1).expand("quick")
    record = toy_runner(tmp_path).run(runs[0])
    folder = tmp_path / "toy" / runs[0].run_id
    for name in ("spec.json", "condition.json", "init.pt", "result.json", "history.csv"):
        assert (folder / name).is_file(), name
    assert len(record.history) == TRAINING.epochs


class Interrupt(Exception):
    pass


def test_runner_resume_matches_uninterrupted(tmp_path):
    runs, _ = toy_experiment(seeds=1).expand("quick")
    spec = runs[1]
    uninterrupted = toy_runner(tmp_path / "a").run(spec)

    def stop_after_two(*args, **kwargs):
        def on_epoch_end(epoch, row):
            if epoch == 2:
                raise Interrupt

        return train(*args, **kwargs, on_epoch_end=on_epoch_end)

    with pytest.raises(Interrupt):
        toy_runner(tmp_path / "b", trainer=stop_after_two).run(spec)
    assert not is_finished(tmp_path / "b" / "toy" / spec.run_id, spec)

    trainer = Counter(train)
    condition = Counter(toy_condition)
    resumed = toy_runner(tmp_path / "b", trainer=trainer, condition=condition).run(spec)
    assert condition.calls == []
    assert trainer.calls[0]["resume"] is True
    assert resumed.result["best"] == uninterrupted.result["best"]
    assert resumed.history[-1]["test_loss"] == uninterrupted.history[-1]["test_loss"]


def test_runner_records_not_applicable(tmp_path):
    from defusal.experiments.conditions import ConditionNotApplicable

    def not_applicable(model, spec, task):
        raise ConditionNotApplicable("no Linear layer")

    runs, _ = toy_experiment(seeds=1).expand("quick")
    record = toy_runner(tmp_path, condition=not_applicable).run(runs[0])
    assert record.status == "n/a"
    assert record.reason == "no Linear layer"
    assert load_record(record.run_dir).status == "n/a"


def fake_record(condition: Condition, seed: int, metric: float, after: dict) -> RunRecord:
    spec = RunSpec(
        experiment="toy",
        task="toy",
        task_size="quick",
        network="gru",
        depth=2,
        width=8,
        condition=condition,
        seed=seed,
        training=TRAINING,
    )
    target = condition.lsc.target if condition.lsc else None
    return RunRecord(
        spec=spec,
        run_dir=Path("."),
        status="done",
        result={"metric": "accuracy", "best": {"test_metric": metric, "valid_metric": metric}},
        condition={
            "radii_before": {"time": [1.5, 1.3]},
            "radii_after": after,
            "targets": {"time": target} if target else {},
            "pretrain_seconds": 2.0,
        },
        history=[
            {"epoch": e, "test_metric": metric * e / 3, "valid_metric": metric} for e in (1, 2, 3)
        ],
        grad_norms=[
            {"step": s, "grad_norm_cells.0": 1.0 / s, "grad_norm_cells.1": 2.0 / s}
            for s in range(1, 6)
        ],
    )


def test_summary_mean_std_matches_numpy():
    metrics = [0.81, 0.86, 0.78, 0.9]
    records = [
        fake_record(LSC_ONE, seed, value, {"time": [1.0 + 0.01 * seed, 0.98]})
        for seed, value in enumerate(metrics)
    ]
    (row,) = summarize(records)
    assert math.isclose(row.mean, np.mean(metrics), rel_tol=1e-12)
    assert math.isclose(row.std, np.std(metrics, ddof=1), rel_tol=1e-12)
    expected_time = np.mean([np.mean([1.0 + 0.01 * s, 0.98]) for s in range(4)])
    assert math.isclose(row.radii_after["time"], expected_time, rel_tol=1e-12)
    assert row.target_met == {"time": True}


def test_summary_marks_missed_target():
    records = [fake_record(LSC_HALF, 0, 0.5, {"time": [0.62, 0.6]})]
    (row,) = summarize(records)
    assert row.target_met == {"time": False}
    assert math.isnan(row.std)


def test_format_mean_std_single_seed():
    assert format_mean_std(0.5, float("nan")) == "0.5 (n=1)"


def test_report_section_has_table_and_pngs(tmp_path):
    records = [
        fake_record(condition, seed, 0.6 + 0.1 * seed, {"time": [0.97, 1.02]})
        for condition in (DEFAULT, LSC_ONE)
        for seed in (0, 1)
    ]
    section, table = experiment_section("toy", "a toy experiment", records, [], tmp_path)
    assert "| toy | gru | 2 | 8 | lsc-1 |" in table
    assert "✓ (target 1)" in section
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    assert len(images) == 3
    for relative in images:
        with Image.open(tmp_path / relative) as image:
            image.verify()
            assert image.format == "PNG"


def test_ffn_radii_match_closed_form():
    from defusal.experiments.conditions import measure_ffn_radii
    from defusal.nets import DeepFFN

    torch.manual_seed(3)
    model = DeepFFN(6, 5, 4, 2, "tanh")
    inputs = torch.randn(3, 6)
    linears = model.linears
    hidden = torch.tanh(linears[0](inputs)).detach().numpy()
    expected = []
    for linear in linears[1:-1]:
        weight = linear.weight.detach().numpy()
        pre = hidden @ weight.T + linear.bias.detach().numpy()
        derivative = 1 - np.tanh(pre) ** 2
        radii = [np.abs(np.linalg.eigvals(d[:, None] * weight)).max() for d in derivative]
        expected.append(np.mean(radii))
        hidden = np.tanh(pre)
    measured = measure_ffn_radii(model, inputs, max_samples=3)
    assert len(measured) == len(expected)
    assert np.allclose(measured, expected, rtol=1e-5)


def ffn_spec(condition: Condition) -> RunSpec:
    return RunSpec(
        experiment="toy",
        task="toy",
        task_size="quick",
        network="ffn",
        depth=3,
        width=16,
        condition=condition,
        seed=0,
        training=TRAINING,
        activation="tanh",
    )


def test_lsuv_gives_unit_std_outputs():
    from defusal.experiments.conditions import apply_lsuv_
    from defusal.nets import DeepFFN

    torch.manual_seed(0)
    model = DeepFFN(4, 16, 3, 3, "tanh")
    inputs = toy_task().inputs["train"]
    apply_lsuv_(model, inputs)
    hidden = inputs
    with torch.no_grad():
        for module in model.layers:
            hidden = module(hidden)
            if isinstance(module, nn.Linear):
                # lsuv 0.3 stops once the std is within 0.1 of 1 (or after 10 attempts).
                assert abs(float(hidden.std()) - 1.0) <= 0.1


def test_gradinit_keeps_parameter_names():
    from defusal.experiments.conditions import apply_gradinit_
    from defusal.nets import DeepFFN

    torch.manual_seed(0)
    model = DeepFFN(4, 16, 3, 3, "tanh")
    names = [name for name, _ in model.named_parameters()]
    summary = apply_gradinit_(model, toy_task(), ffn_spec(Condition("g", peer="gradinit")), seed=0)
    assert [name for name, _ in model.named_parameters()] == names
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    # 96 training examples in batches of 16 give 6 batches, fewer than the 20 steps allowed.
    assert summary["steps"] == 6
    assert summary["scale_min"] >= 0.01


def test_fused_training_copy_matches_stack():
    from defusal.experiments.runner import fused_for_training
    from defusal.nets import build_network
    from defusal.train import parameter_groups

    stack = build_network("lstm", 5, 8, 3, 4, seed=0)
    fused = fused_for_training(stack)
    x = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(1))

    assert fused is not stack
    assert torch.allclose(fused(x)[0], stack(x)[0], atol=1e-5)
    assert [name for name in parameter_groups(fused) if name.startswith("cells.")] == [
        "cells.0",
        "cells.1",
        "cells.2",
    ]


def test_fused_training_keeps_other_networks():
    from defusal.experiments.runner import fused_for_training
    from defusal.nets import build_network

    stack = build_network("relu_rnn", 5, 8, 2, 4, seed=0)

    assert fused_for_training(stack) is stack


def test_runner_recomputes_corrupt_checkpoints(tmp_path):
    runs, _ = toy_experiment(seeds=1).expand("quick")
    spec = runs[1]
    uninterrupted = toy_runner(tmp_path / "a").run(spec)

    def stop_after_two(*args, **kwargs):
        def on_epoch_end(epoch, row):
            if epoch == 2:
                raise Interrupt

        return train(*args, **kwargs, on_epoch_end=on_epoch_end)

    with pytest.raises(Interrupt):
        toy_runner(tmp_path / "b", trainer=stop_after_two).run(spec)
    folder = tmp_path / "b" / "toy" / spec.run_id
    for name in ("init.pt", "checkpoint.pt"):
        (folder / name).write_bytes((folder / name).read_bytes()[:100])

    condition = Counter(toy_condition)
    resumed = toy_runner(tmp_path / "b", condition=condition).run(spec)

    assert len(condition.calls) == 1
    assert resumed.history[-1]["test_loss"] == uninterrupted.history[-1]["test_loss"]
