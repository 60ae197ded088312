"""The ``defusal lsc`` command: measure local gains and pre-train networks to the LSC."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from defusal.cli.common import common_options
from defusal.errors import DefusalError

DATA_SOURCES = ("gaussian", "slmnist", "fsdd", "ptb")


def register(subparsers) -> None:
    """Add ``defusal lsc measure`` and ``defusal lsc pretrain``."""
    parser = subparsers.add_parser(
        "lsc",
        help="measure local Jacobian radii and pre-train to the Local Stability Condition",
        description="Measure the spectral radius of every local Jacobian of a deep RNN and "
        "pre-train its weights so that each radius meets a target.",
    )
    parser.set_defaults(handler=lambda _args: _print_help(parser))
    actions = parser.add_subparsers(dest="lsc_command", metavar="ACTION")

    measure_parser = actions.add_parser(
        "measure",
        parents=[common_options(), _network_options()],
        help="print the mean radius per layer and edge type",
    )
    measure_parser.set_defaults(handler=measure_command)

    pretrain_parser = actions.add_parser(
        "pretrain",
        parents=[common_options(), _network_options()],
        help="pre-train a network to the LSC and save a checkpoint",
    )
    pretrain_parser.add_argument(
        "--target", default="1", help="target radius: a positive number or 'unbalanced' (1)"
    )
    pretrain_parser.add_argument(
        "--mode",
        default="plain",
        help="plain (Adam on the loss and kernel rescaling) or faithful (the original "
        "AdaBelief, rescaling and shuffling procedure) (plain)",
    )
    pretrain_parser.add_argument("--steps", type=int, default=300, help="maximum steps (300)")
    pretrain_parser.add_argument(
        "--lr", type=float, default=None, help="learning rate (1e-2 plain, 7.2e-3 faithful)"
    )
    pretrain_parser.add_argument(
        "--rescale",
        type=float,
        default=None,
        help="plain mode: exponent of the kernel rescaling after each step, 0 turns it off (0.5)",
    )
    pretrain_parser.add_argument(
        "--tolerance", type=float, default=0.05, help="stop band around each target (0.05)"
    )
    pretrain_parser.add_argument(
        "--patience", type=int, default=20, help="in-band steps needed to stop (20)"
    )
    pretrain_parser.add_argument(
        "--out", default=None, help="checkpoint path (runs/lsc/<net>_w<width>_d<depth>.ckpt)"
    )
    pretrain_parser.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar"
    )
    pretrain_parser.set_defaults(handler=pretrain_command)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _network_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--net",
        default="lstm",
        help="network kind: lstm, gru, relu_rnn, sigmoid_rnn, alif, lru (lstm)",
    )
    parser.add_argument("--width", type=int, default=64, help="hidden units per layer (64)")
    parser.add_argument("--depth", type=int, default=2, help="number of layers (2)")
    parser.add_argument(
        "--data", default="gaussian", help="input source: gaussian, slmnist, fsdd or ptb (gaussian)"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="features per time step; must match the task (16 for gaussian)",
    )
    parser.add_argument("--time-steps", type=int, default=50, help="Gaussian sequence length (50)")
    parser.add_argument(
        "--estimator",
        default="eig",
        help="eig (exact radius), norm (spectral norm), matrix_free or matrix_free_norm (eig)",
    )
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch (16)")
    parser.add_argument(
        "--time-samples", type=int, default=10, help="time steps measured per sequence (10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    return parser


def _check_positive(name: str, value) -> None:
    if value is not None and (
        not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value)
    ):
        raise DefusalError(f"--{name} must be positive, got {value}")


def _setup(args) -> tuple[torch.nn.Module, dict, object]:
    """Return the network, its build configuration and the input batches."""
    from defusal.nets.build import build_network

    for name in ("width", "depth", "batch", "time_steps", "time_samples", "input_size"):
        _check_positive(name.replace("_", "-"), getattr(args, name))
    if args.data not in DATA_SOURCES:
        raise DefusalError(f"unknown data source {args.data!r}; use {', '.join(DATA_SOURCES)}")
    generator = torch.Generator().manual_seed(args.seed)
    config = dict(kind=args.net, hidden_size=args.width, num_layers=args.depth, seed=args.seed)
    if args.data == "gaussian":
        input_size = args.input_size or 16
        config.update(input_size=input_size, output_size=10)
        batches = torch.randn(args.batch, args.time_steps, input_size, generator=generator)
    else:
        from defusal.tasks import load_task

        task = load_task(args.data, data_dir=args.data_dir, seed=args.seed)
        if args.input_size is not None and args.input_size != task.input_size:
            raise DefusalError(
                f"--input-size {args.input_size} does not match {args.data}, which has "
                f"{task.input_size} features per step; omit --input-size"
            )
        if task.kind == "language_model":
            config.update(input_size=None, output_size=task.output_size, vocab_size=task.input_size)
        else:
            config.update(input_size=task.input_size, output_size=task.output_size)
        batches = list(
            task.batches("train", args.batch, shuffle=True, generator=generator, limit=4)
        )
        if not batches:
            raise DefusalError(f"task {args.data} yielded no batch; use a smaller --batch")
    model = build_network(**config)
    return model, config, batches


def measure_command(args) -> int:
    """Print the mean radius of every edge type per layer."""
    from defusal.lsc import format_table, measure

    model, _, batches = _setup(args)
    table = measure(
        model, batches, estimator=args.estimator, time_samples=args.time_samples, seed=args.seed
    )
    print(
        f"{args.net}, width {args.width}, depth {args.depth}, data {args.data}, "
        f"estimator {args.estimator}"
    )
    print(format_table(table))
    return 0


def _parse_target(text: str):
    if text.strip().lower() == "unbalanced":
        return "unbalanced"
    try:
        return float(text)
    except ValueError:
        raise DefusalError(
            f"invalid --target {text!r}; use a positive number or 'unbalanced'"
        ) from None


def _check_writable_file(path: Path) -> None:
    """Reject a checkpoint path that cannot become a file, before any pre-training runs."""
    if path.is_dir():
        raise DefusalError(f"--out {path} is a folder; give a file path such as {path}/model.ckpt")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise DefusalError(
                f"--out {path}: {parent} is a file, not a folder; choose another path"
            )


def pretrain_command(args) -> int:
    """Pre-train to the LSC with a progress bar, print the report and save a checkpoint."""
    from tqdm import tqdm

    from defusal.lsc import pretrain_, save_checkpoint
    from defusal.lsc.targets import resolve_targets

    target = _parse_target(args.target)
    resolve_targets(target, num_layers=max(args.depth, 1), time_steps=args.time_steps)
    for name in ("steps", "patience", "tolerance", "lr"):
        _check_positive(name, getattr(args, name))
    model, config, batches = _setup(args)
    out = Path(args.out or f"runs/lsc/{args.net}_w{args.width}_d{args.depth}.ckpt")
    _check_writable_file(out)
    bar = tqdm(total=args.steps, disable=args.no_progress, desc="LSC", unit="step")

    def progress(step: int, loss: float, means: dict[str, float]) -> None:
        radii = " ".join(f"{edge}={value:.3f}" for edge, value in means.items())
        bar.set_postfix_str(f"loss={loss:.4f} {radii}")
        bar.update(1)

    try:
        report = pretrain_(
            model,
            batches,
            target=target,
            mode=args.mode,
            estimator=args.estimator,
            steps=args.steps,
            lr=args.lr,
            tolerance=args.tolerance,
            patience=args.patience,
            measure_samples=args.time_samples,
            seed=args.seed,
            callback=progress,
            rescale=args.rescale,
        )
    finally:
        bar.close()
    save_checkpoint(out, model, config=config, report=report)
    print(report.to_markdown())
    print(f"checkpoint: {out}")
    return 0
