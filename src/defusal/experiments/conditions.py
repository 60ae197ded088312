"""Initial conditions of a run: build the network, initialise it, apply a peer method or LSC.

Conditions compared:

- ``default``, ``glorot``, ``he``, ``orthogonal``: ``defusal.nets.initialize_`` schemes.
- ``identity``: identity recurrent matrices with a ReLU RNN (IRNN); only for ``relu_rnn``.
- ``lsc-1``, ``lsc-0.5``, ``lsc-unbalanced``: LSC pre-training to that target radius.
- ``lsuv``: layer-sequential unit-variance initialisation from the ``lsuv`` package. It rescales
  ``nn.Linear`` and convolution modules only, so it applies to the feed-forward networks. The
  recurrent cells keep their weights as raw parameters and are left out.
- ``gradinit``: GradInit from the ``gradinit`` package: one learnable scale per parameter
  tensor, fitted so that the gradient norm stays below ``gamma`` (else the loss is minimised).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.experiments.configs import FFN_KIND, RECURRENT_KINDS, Condition, RunSpec

logger = logging.getLogger(__name__)

LSUV_KINDS = (FFN_KIND,)
PROBE_BATCH_SIZE = 16
IDENTITY_KINDS = ("relu_rnn",)


class ConditionNotApplicable(DefusalError):
    """A condition cannot be applied to a network; the run is reported as n/a with the reason."""


def applicability(condition: Condition, network: str) -> str | None:
    """Return why ``condition`` does not apply to ``network``, or ``None`` when it applies.

    Args:
        condition: the initial condition.
        network: a recurrent kind or ``"ffn"``.

    Raises:
        DefusalError: ``network`` is not a known kind.
    """
    if network not in RECURRENT_KINDS and network != FFN_KIND:
        known = ", ".join((*RECURRENT_KINDS, FFN_KIND))
        raise DefusalError(f"unknown network {network!r}; use one of {known}")
    if condition.peer == "lsuv" and network not in LSUV_KINDS:
        return (
            "lsuv 0.3 rescales only Linear and convolution modules; the recurrent cells keep "
            "their weights as raw parameters, so only the readout would change"
        )
    if condition.init == "identity" and network not in IDENTITY_KINDS:
        return "identity initialisation (IRNN) is defined for the ReLU RNN only"
    if condition.lsc is not None and network == "alif" and condition.lsc.target != 1.0:
        return "the original study pre-trains ALIF networks to radius 1 only"
    if condition.lsc is not None and condition.lsc.target == "unbalanced" and network != "lru":
        return "unbalanced targets are defined for the residual LRU only"
    return None


def build_model(spec: RunSpec, task: Any) -> nn.Module:
    """Build the network of ``spec`` for ``task``, with the seed of ``spec``.

    Language models (``task.kind == "language_model"``) get a token embedding of size
    ``spec.embedding_size`` (the width when ``None``) over a vocabulary of ``task.input_size``.

    Raises:
        DefusalError: unknown network kind or an impossible size.
    """
    from defusal import nets

    torch.manual_seed(spec.seed)
    if spec.network == FFN_KIND:
        return nets.DeepFFN(
            task.input_size, spec.width, spec.depth, task.output_size, spec.activation or "relu"
        )
    if task.kind == "language_model":
        embedding = spec.embedding_size or spec.width
        return nets.build_network(
            spec.network,
            None,
            spec.width,
            spec.depth,
            task.output_size,
            vocab_size=task.input_size,
            embedding_size=embedding,
            tie_weights=spec.tie_weights,
            seed=spec.seed,
        )
    return nets.build_network(
        spec.network, task.input_size, spec.width, spec.depth, task.output_size, seed=spec.seed
    )


def apply_condition(
    model: nn.Module, spec: RunSpec, task: Any, *, generator_seed: int | None = None
) -> dict[str, Any]:
    """Initialise ``model`` in place as ``spec.condition`` specifies and measure its radii.

    Steps: the init scheme, then the peer method, then LSC pre-training. Radii of the local
    Jacobians are measured before and after on a batch of training data.

    Args:
        model: network from :func:`build_model`.
        spec: the run.
        task: the task, source of the batches fed to the peer method and LSC.
        generator_seed: seed of the batch order, ``spec.seed`` when ``None``.

    Returns:
        JSON-ready record with ``radii_before`` and ``radii_after`` (edge type to list of
        per-layer radii), ``targets`` (edge type to target radius), ``pretrain_seconds``,
        ``lsc`` (the LSC report, or ``None``) and ``peer`` (peer details, or ``None``).

    Raises:
        ConditionNotApplicable: the condition cannot act on this network.
    """
    condition = spec.condition
    seed = spec.seed if generator_seed is None else generator_seed
    reason = applicability(condition, spec.network)
    if reason is not None:
        raise ConditionNotApplicable(reason)
    # Radii are measured on one batch; every sample costs one Jacobian per edge and layer.
    batch_size = condition.lsc.batch_size if condition.lsc else PROBE_BATCH_SIZE
    probe = _first_batch(task, batch_size, seed)

    if condition.init != "default":
        from defusal import nets

        nets.initialize_(model, condition.init)

    record: dict[str, Any] = {"peer": None, "lsc": None, "targets": {}, "pretrain_seconds": 0.0}
    if condition.lsc is None:
        record["radii_before"] = measure_radii(model, probe)
    started = time.perf_counter()
    if condition.peer == "lsuv":
        record["peer"] = apply_lsuv_(model, probe[0])
    elif condition.peer == "gradinit":
        record["peer"] = apply_gradinit_(model, task, spec, seed=seed)
    if condition.lsc is not None:
        # The LSC report measures before and after with learning off on its own batches.
        report = apply_lsc_(model, task, spec, seed=seed)
        record["lsc"] = report
        record["targets"] = _targets_of(report, condition.lsc.target)
        record["radii_before"] = _radii_as_lists(report.get("before", {}))
        record["radii_after"] = _radii_as_lists(report.get("after", {}))
    record["pretrain_seconds"] = time.perf_counter() - started
    if condition.lsc is None:
        changed = condition.peer is not None
        record["radii_after"] = measure_radii(model, probe) if changed else record["radii_before"]
    return record


def measure_radii(model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, list[float]]:
    """Return the batch-mean spectral radius of every local Jacobian, per edge type and layer.

    Args:
        model: a recurrent stack or a deep FFN.
        batch: ``(inputs, targets)`` from the task; only the inputs are used.

    Returns:
        Mapping from edge type (``time``, ``depth``, ``encoder``, ``decoder``) to the
        radii of its layers, bottom first.
    """
    from defusal import lsc
    from defusal.nets import DeepFFN

    if isinstance(model, DeepFFN):
        return {"layer": measure_ffn_radii(model, batch[0])}
    model_was_training = model.training
    model.eval()
    try:
        measured = lsc.measure(model, batch[0])
    finally:
        model.train(model_was_training)
    return _radii_as_lists(measured)


def measure_ffn_radii(model: nn.Module, inputs: Tensor, *, max_samples: int = 8) -> list[float]:
    """Return the batch-mean spectral radius of every hidden-to-hidden block of a ``DeepFFN``.

    Block ``l`` maps the output ``h_l`` of hidden layer ``l`` to ``h_{l+1} = act(W h_l + b)``,
    with the square Jacobian ``diag(act'(W h_l + b)) W``. The first block (input to hidden) is
    not square and is left out.

    Args:
        model: a ``DeepFFN``.
        inputs: ``(batch, input_size)``; the first ``max_samples`` examples are used, since
            every example costs one eigendecomposition per block.
        max_samples: examples measured.

    Returns:
        Radii of blocks ``1 .. depth - 1``.
    """
    linear_positions = [i for i, m in enumerate(model.layers) if isinstance(m, nn.Linear)]
    radii = []
    with torch.no_grad():
        hidden = model.forward_range(inputs[:max_samples].flatten(1), 0, linear_positions[1])
    for start, stop in zip(linear_positions[1:-1], linear_positions[2:], strict=True):

        def block(h: Tensor, start: int = start, stop: int = stop) -> Tensor:
            return model.forward_range(h.unsqueeze(0), start, stop).squeeze(0)

        jacobians = torch.func.vmap(torch.func.jacrev(block))(hidden).detach()
        radii.append(float(torch.linalg.eigvals(jacobians).abs().amax(-1).mean()))
        with torch.no_grad():
            hidden = model.forward_range(hidden, start, stop)
    return radii


def apply_lsc_(model: nn.Module, task: Any, spec: RunSpec, *, seed: int) -> dict[str, Any]:
    """Pre-train ``model`` in place to the LSC target of ``spec`` and return the report."""
    from defusal import lsc

    settings = spec.condition.lsc
    batches = list(_batches(task, settings.batch_size, seed, settings.num_batches))
    options = _supported(lsc.pretrain_, dict(settings.options))
    options.setdefault("seed", seed)
    report = lsc.pretrain_(model, batches, target=settings.target, mode=settings.mode, **options)
    return report.to_dict() if hasattr(report, "to_dict") else dict(report)


def apply_lsuv_(model: nn.Module, inputs: Tensor) -> dict[str, Any]:
    """Apply LSUV from the ``lsuv`` package to the ``nn.Linear`` layers of ``model``.

    Every Linear weight is first made orthonormal, then scaled, layer after layer, until the
    layer's output on ``inputs`` has unit standard deviation (tolerance 0.1, 10 attempts).
    """
    from lsuv import lsuv_with_singlebatch

    layers = sum(isinstance(module, nn.Linear) for module in model.modules())
    if layers == 0:
        raise ConditionNotApplicable("lsuv found no Linear or convolution layer to rescale")
    lsuv_with_singlebatch(model, inputs, verbose=False)
    return {"method": "lsuv", "layers": layers}


def apply_gradinit_(
    model: nn.Module,
    task: Any,
    spec: RunSpec,
    *,
    seed: int,
    steps: int = 20,
    lr: float = 1e-2,
    gamma: float = 1.0,
    min_scale: float = 0.01,
) -> dict[str, Any]:
    """Fit one scale per parameter tensor with GradInit from the ``gradinit`` package.

    Each step minimises the L1 gradient norm of the task loss while it exceeds ``gamma``, else
    the loss itself, with Adam on the scales only. Scales are clamped at ``min_scale``.

    Returns:
        ``{"method": "gradinit", "steps", "scale_min", "scale_max"}``.
    """
    from gradinit import GradInitWrapper

    batches = _batches(task, min(spec.training.batch_size, 64), seed, steps)
    wrapper = GradInitWrapper(model)
    try:
        scales = [p for n, p in model.named_parameters() if n.endswith("_gradinit_scale_factor")]
        optimizer = torch.optim.Adam(scales, lr=lr)
        done = 0
        for batch in batches:
            loss = task_loss(model, task, batch, spec.training.readout)
            objective = wrapper.grad_loss(loss, norm=1, gamma=gamma)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            wrapper.clamp_scales(min_scale)
            done += 1
        values = torch.stack([p.detach() for p in scales])
        summary = {
            "method": "gradinit",
            "steps": done,
            "scale_min": float(values.min()),
            "scale_max": float(values.max()),
        }
    finally:
        wrapper.detach()
    return summary


def task_loss(model: nn.Module, task: Any, batch: tuple[Tensor, Tensor], readout: str) -> Tensor:
    """Return the mean cross-entropy of ``model`` on one batch, as ``defusal.train`` scores it."""
    from defusal.train.evaluate import batch_loss, run_model

    inputs, targets = batch
    outputs, _ = run_model(model, inputs)
    summed, _, count = batch_loss(task.kind, outputs, targets, readout)
    return summed / count


def _first_batch(task: Any, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
    for batch in _batches(task, batch_size, seed, 1):
        return batch
    raise DefusalError(f"task {task.name!r} has no training batch of size {batch_size}")


def _batches(task: Any, batch_size: int, seed: int, limit: int) -> Iterable[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return task.batches("train", batch_size, shuffle=True, generator=generator, limit=limit)


def _supported(function: Any, options: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise DefusalError(
            f"{function.__name__} has no option {', '.join(unknown)}; fix the experiment config"
        )
    return options


def _radii_as_lists(measured: Any) -> dict[str, list[float]]:
    if hasattr(measured, "to_dict"):
        measured = measured.to_dict()
    radii: dict[str, list[float]] = {}
    for edge, values in dict(measured).items():
        if isinstance(values, dict):
            values = [values[key] for key in sorted(values, key=int)]
        elif isinstance(values, Tensor):
            values = values.reshape(-1).tolist()
        elif not isinstance(values, list | tuple):
            values = [values]
        radii[str(edge)] = [float(value) for value in values]
    return radii


def _targets_of(report: dict[str, Any], target: float | str) -> dict[str, float]:
    if isinstance(report.get("targets"), dict):
        return {str(k): float(v) for k, v in report["targets"].items()}
    if isinstance(target, int | float):
        return {edge: float(target) for edge in ("time", "depth", "encoder", "decoder")}
    return {}
