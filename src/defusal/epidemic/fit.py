"""Fitting the quarantine model to case counts: log loss, Adam then L-BFGS, min-loss iterates.

Loss per member, summed over the days of the window (log of absolute values, as published):

- V2: (log C_k - log I_k)^2 + (log(RD_k + 1) - log(R_k + 1))^2, with C cumulative confirmed
  and RD = recovered + deaths.
- V3: (log A_k - log(I_k + T_k))^2 + (log RD_k - log R_k)^2, with A = active cases.

The second term is dropped for the infected-only fit and in stage 2 of the two-stage fit.
Several regions and several seeds are fitted together as independent members of one batched
model; Adam is element-wise, so each member follows its own trajectory, and every member keeps
its own lowest-loss parameters.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from defusal.epidemic.adjoint import AdjointProblem, loss_and_gradients
from defusal.epidemic.data import RegionSeries
from defusal.epidemic.model import INPUT_SCALES, QUARANTINE_MODELS, VERSIONS, QSIRModel
from defusal.errors import DefusalError
from defusal.io import load_torch, save_torch

logger = logging.getLogger(__name__)

DTYPE = torch.float64
US_FIXED_GAMMA = 0.007627  # gamma of the medRxiv 2020 US fit, fixed there and here
GRIDS = ("day", "stretched")
TWO_STAGE = ("auto", "always", "never")
LOSSES = ("both", "infected")
SOLVERS = ("fast_rk4", "rk4", "dopri5")
CHECKPOINT_FORMAT = 1


@dataclass
class FitConfig:
    """Settings of a fit; defaults follow the medRxiv 2020 V2 model where it has one.

    Attributes:
        version: ``"v2"`` (S, I, R, T network input, 63 parameters) or ``"v3"`` (54).
        seeds: network seeds of the ensemble (seed 50 is the original's).
        input_scale: ``"raw"`` (Q = |NN(u)|/N, the original) or ``"normalised"``.
        grid: ``"day"`` (data day k at model time k) or ``"stretched"`` (n data days spread
            over [0, n], so day k sits at t = k n / (n - 1), as in the original code).
        solver: ``"fast_rk4"`` (built-in classical RK4, fixed step ``step`` days, the
            fastest), or torchdiffeq ``odeint`` with ``"rk4"`` (fixed step) or ``"dopri5"``
            (``rtol``, ``atol``).
        adam_steps, adam_lr: Adam iterations and learning rate of each stage.
        lbfgs_steps: L-BFGS iterations after Adam (0 to skip).
        two_stage: ``"auto"`` (when a recovered problem touches the window), ``"always"`` or
            ``"never"``.
        stage2_steps: Adam iterations of stage 2.
        reinit_stage2: redraw the network from its seed before stage 2 (V3 code does).
        initial_quarantined: T at day 0 (10 in both published versions).
        beta0, gamma0, delta0: initial rates per day.
        hidden: hidden units of the network.
        quarantine: ``"network"`` (published) or ``"logistic"`` (parametric Q(t) baseline).
        monotone_t: constrain the V2 network so that Q is non-decreasing in the quarantined
            count T (see :class:`defusal.epidemic.model.QuarantineNet`); False is the original.
    """

    version: str = "v2"
    seeds: tuple[int, ...] = (50,)
    input_scale: str = "raw"
    grid: str = "day"
    solver: str = "fast_rk4"
    step: float = 1.0
    rtol: float = 1e-4
    atol: float = 1e-2
    adam_steps: int = 300
    adam_lr: float = 0.03
    lbfgs_steps: int = 20
    two_stage: str = "auto"
    stage2_steps: int = 200
    reinit_stage2: bool = True
    initial_quarantined: float = 10.0
    beta0: float = 0.5
    gamma0: float = 0.03
    delta0: float = 0.01
    hidden: int = 10
    quarantine: str = "network"
    monotone_t: bool = False

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        checks = (
            ("version", self.version, VERSIONS),
            ("input_scale", self.input_scale, INPUT_SCALES),
            ("grid", self.grid, GRIDS),
            ("solver", self.solver, SOLVERS),
            ("two_stage", self.two_stage, TWO_STAGE),
            ("quarantine", self.quarantine, QUARANTINE_MODELS),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise DefusalError(f"invalid {name} {value!r}; choose from {', '.join(allowed)}")
        if not self.seeds:
            raise DefusalError("at least one seed is needed")
        if self.adam_steps < 0 or self.lbfgs_steps < 0 or self.stage2_steps < 0:
            raise DefusalError("iteration counts must not be negative")
        if self.monotone_t and (self.version != "v2" or self.quarantine != "network"):
            raise DefusalError(
                "monotone_t needs the V2 network model, whose input includes T; "
                "use version v2 and quarantine network, or turn monotone_t off"
            )
        if not (0 < self.step <= 1):
            raise DefusalError(f"invalid solver step {self.step}; choose 0 < step <= 1 day")


@dataclass
class FitProblem:
    """One region to fit, with its per-region options.

    Attributes:
        series: the training window.
        fixed_gamma: gamma to keep fixed (the US V2 fit used 0.007627), or None to fit it.
        loss: ``"both"`` terms, or ``"infected"`` (the infected/active term only).
        two_stage: overrides the config's ``two_stage`` for this region.
    """

    series: RegionSeries
    fixed_gamma: float | None = None
    loss: str = "both"
    two_stage: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise DefusalError(f"invalid loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.fixed_gamma is not None and not (self.fixed_gamma > 0):
            raise DefusalError(f"fixed gamma must be positive, got {self.fixed_gamma}")

    def uses_two_stage(self, config: FitConfig) -> bool:
        """Return whether this region is fitted in two stages."""
        mode = self.two_stage or config.two_stage
        if mode == "always":
            return True
        if mode == "never":
            return False
        return not self.series.recovered_reliable


@dataclass
class Targets:
    """Padded training targets of all members, shape ``(members, days + 1)`` each."""

    infected: torch.Tensor
    removed: torch.Tensor
    infected_mask: torch.Tensor
    removed_mask: torch.Tensor
    removed_weight: torch.Tensor
    state0: torch.Tensor
    time_scale: torch.Tensor | None
    days: int


@dataclass
class FitResult:
    """Fitted ensemble: ``len(problems) * len(config.seeds)`` members, region-major.

    Member ``p * len(seeds) + s`` is region ``p`` with seed ``config.seeds[s]``.
    """

    model: QSIRModel
    problems: list[FitProblem]
    config: FitConfig
    losses: torch.Tensor
    stages: list[str] = field(default_factory=list)

    @property
    def seeds_per_region(self) -> int:
        """Number of seeds of each region."""
        return len(self.config.seeds)

    def members_of(self, region_index: int) -> list[int]:
        """Return the member indices of region ``region_index``."""
        count = self.seeds_per_region
        return list(range(region_index * count, (region_index + 1) * count))

    def best_member(self, region_index: int) -> int:
        """Return the member of region ``region_index`` with the lowest loss."""
        members = self.members_of(region_index)
        losses = self.losses[members]
        losses = torch.where(torch.isfinite(losses), losses, torch.inf)
        return members[int(torch.argmin(losses))]

    def region_index(self, region: str) -> int:
        """Return the index of the region called ``region``."""
        for index, problem in enumerate(self.problems):
            if problem.series.region == region:
                return index
        names = ", ".join(p.series.region for p in self.problems)
        raise DefusalError(f"region {region!r} is not in this fit; fitted: {names}")


def time_scales(problems: list[FitProblem], config: FitConfig) -> torch.Tensor | None:
    """Return the per-member time stretch n / (n - 1) of the ``stretched`` grid, or None."""
    if config.grid == "day":
        return None
    values = []
    for problem in problems:
        n = len(problem.series.days)
        values += [n / (n - 1)] * len(config.seeds)
    return torch.tensor(values, dtype=DTYPE)


def build_targets(problems: list[FitProblem], config: FitConfig) -> Targets:
    """Stack the training targets and initial states of every member (padded with masks)."""
    days = max(int(problem.series.days[-1]) for problem in problems)
    members = len(problems) * len(config.seeds)
    infected = torch.ones(members, days + 1, dtype=DTYPE)
    removed = torch.ones(members, days + 1, dtype=DTYPE)
    infected_mask = torch.zeros(members, days + 1, dtype=torch.bool)
    removed_mask = torch.zeros(members, days + 1, dtype=torch.bool)
    removed_weight = torch.ones(members, dtype=DTYPE)
    state0 = torch.zeros(members, 4, dtype=DTYPE)
    for index, problem in enumerate(problems):
        series = problem.series
        if config.version == "v2":
            infected_values = series.confirmed
            removed_values = series.removed + 1.0
        else:
            infected_values = series.active
            removed_values = series.removed
        infected_ok = np.isfinite(infected_values) & (infected_values > 0)
        removed_ok = np.isfinite(removed_values) & (removed_values > 0)
        if infected_ok.sum() < 3:
            raise DefusalError(
                f"{series.region}: fewer than 3 days with positive cases in the window; "
                "choose another window"
            )
        population = float(series.population.people)
        i0 = series.confirmed[0] if config.version == "v2" else series.active[0]
        if not np.isfinite(i0):
            i0 = series.confirmed[0] - series.deaths[0]
        r0 = series.removed[0] if np.isfinite(series.removed[0]) else series.deaths[0]
        t0 = config.initial_quarantined
        start = torch.tensor([population - i0 - r0 - t0, i0, r0, t0], dtype=DTYPE)
        weight = 0.0 if problem.loss == "infected" else 1.0
        day_index = torch.as_tensor(series.days, dtype=torch.long)
        for member in range(index * len(config.seeds), (index + 1) * len(config.seeds)):
            infected[member, day_index] = torch.as_tensor(
                np.where(infected_ok, infected_values, 1.0), dtype=DTYPE
            )
            removed[member, day_index] = torch.as_tensor(
                np.where(removed_ok, removed_values, 1.0), dtype=DTYPE
            )
            infected_mask[member, day_index] = torch.as_tensor(infected_ok)
            removed_mask[member, day_index] = torch.as_tensor(removed_ok)
            removed_weight[member] = weight
            state0[member] = start
    return Targets(
        infected,
        removed,
        infected_mask,
        removed_mask,
        removed_weight,
        state0,
        time_scales(problems, config),
        days,
    )


def build_model(problems: list[FitProblem], config: FitConfig) -> QSIRModel:
    """Create the batched model with one member per region and seed."""
    seeds, population, case_scale, fixed = [], [], [], []
    for problem in problems:
        series = problem.series
        for seed in config.seeds:
            seeds.append(seed)
            population.append(float(series.population.people))
            case_scale.append(float(np.nanmax(series.confirmed)))
            gamma = problem.fixed_gamma
            fixed.append(float("nan") if gamma is None else gamma)
    return QSIRModel(
        config.version,
        torch.tensor(population, dtype=DTYPE),
        seeds,
        input_scale=config.input_scale,
        case_scale=torch.tensor(case_scale, dtype=DTYPE),
        beta0=config.beta0,
        gamma0=config.gamma0,
        delta0=config.delta0,
        fixed_gamma=torch.tensor(fixed, dtype=DTYPE),
        hidden=config.hidden,
        quarantine=config.quarantine,
        monotone_t=config.monotone_t,
    ).to(DTYPE)


def member_losses(model: QSIRModel, targets: Targets, config: FitConfig) -> torch.Tensor:
    """Log loss of every member, shape ``(members,)``; see the module docstring."""
    states = model.simulate(
        targets.state0,
        targets.days,
        time_scale=targets.time_scale,
        method=config.solver,
        step=config.step,
        rtol=config.rtol,
        atol=config.atol,
    ).transpose(0, 1)
    _, infected, recovered, quarantined = states.unbind(-1)
    if config.version == "v2":
        model_infected, model_removed = infected, recovered + 1.0
    else:
        model_infected, model_removed = infected + quarantined, recovered
    tiny = 1e-8
    infected_error = targets.infected.log() - model_infected.abs().clamp_min(tiny).log()
    removed_error = targets.removed.log() - model_removed.abs().clamp_min(tiny).log()
    infected_term = (infected_error.square() * targets.infected_mask).sum(1)
    removed_term = (removed_error.square() * targets.removed_mask).sum(1)
    return infected_term + targets.removed_weight * removed_term


def adjoint_problem(model: QSIRModel, targets: Targets, config: FitConfig) -> AdjointProblem | None:
    """Return the constants of the hand-written RK4 adjoint, or None where it does not apply.

    It applies to network quarantine models solved with ``fast_rk4``; the logistic baseline
    and the torchdiffeq solvers use autograd.
    """
    if config.solver != "fast_rk4" or model.net is None:
        return None
    members = model.members
    count = model.net.in_features
    scale = model.input_scales()
    input_scale = (1.0 / scale[:, :count]).numpy()
    output_scale = model.output_scale().numpy()
    time_scale = (
        np.ones(members) if targets.time_scale is None else targets.time_scale.numpy().copy()
    )
    return AdjointProblem(
        version=model.version,
        state0=targets.state0.numpy().copy(),
        population=model.population.numpy().copy(),
        input_scale=input_scale,
        output_scale=output_scale,
        time_scale=time_scale,
        log_infected_target=targets.infected.log().numpy(),
        log_removed_target=targets.removed.log().numpy(),
        infected_mask=targets.infected_mask.numpy().astype(float),
        removed_mask=targets.removed_mask.numpy().astype(float),
        removed_weight=targets.removed_weight.numpy().copy(),
        days=targets.days,
        substeps=max(1, round(1.0 / config.step)),
    )


def _model_arrays(model: QSIRModel) -> dict[str, np.ndarray]:
    # The adjoint uses the effective weights, so _chain_monotone maps their gradients back.
    weight1, bias1, weight2, bias2 = model.net.effective_parameters()
    arrays = {
        "log_beta": model.log_beta.detach().numpy(),
        "log_gamma": model.log_gamma.detach().numpy(),
        "weight1": weight1.detach().numpy(),
        "bias1": bias1.detach().numpy(),
        "weight2": weight2.detach().numpy(),
        "bias2": bias2.detach().numpy(),
    }
    if model.log_delta is not None:
        arrays["log_delta"] = model.log_delta.detach().numpy()
    return arrays


def losses_and_gradients(
    model: QSIRModel, targets: Targets, config: FitConfig, problem: AdjointProblem | None
) -> torch.Tensor:
    """Return every member's loss and store the gradient of their (finite) sum in ``.grad``.

    Uses the hand-written adjoint when ``problem`` is given, else autograd. Members with a
    non-finite loss get zero gradients.
    """
    if problem is None:
        losses = member_losses(model, targets, config)
        finite = torch.isfinite(losses)
        losses[finite].sum().backward()
        return losses.detach()
    problem.removed_weight = targets.removed_weight.numpy().copy()
    values, grads = loss_and_gradients(_model_arrays(model), problem)
    if model.net.monotone:
        _chain_monotone(model, grads)
    finite = np.isfinite(values)
    parameters = dict(model.named_parameters())
    for name, grad in grads.items():
        key = name if name in parameters else f"net.{name}"
        shape = (-1,) + (1,) * (grad.ndim - 1)
        grad = np.where(finite.reshape(shape), grad, 0.0)
        tensor = torch.from_numpy(np.ascontiguousarray(grad)).to(DTYPE)
        parameter = parameters[key]
        if parameter.grad is None:
            parameter.grad = tensor
        else:
            parameter.grad.add_(tensor)
    return torch.from_numpy(values)


def _chain_monotone(model: QSIRModel, grads: dict[str, np.ndarray]) -> None:
    """Turn gradients with respect to |w| into gradients with respect to w (in place)."""
    net = model.net
    grads["weight1"][:, 3:] *= np.sign(net.weight1.detach().numpy()[:, 3:])
    grads["weight2"] *= np.sign(net.weight2.detach().numpy())
    grads["bias2"] *= np.sign(net.bias2.detach().numpy())


class _MinLossTracker:
    """Keeps, for every member, the parameters with the lowest loss seen so far."""

    def __init__(self, model: QSIRModel):
        self.model = model
        self.loss = torch.full((model.members,), math.inf, dtype=DTYPE)
        self.state = {name: p.detach().clone() for name, p in model.named_parameters()}

    def update(self, losses: torch.Tensor) -> None:
        improved = torch.isfinite(losses) & (losses < self.loss)
        if not improved.any():
            return
        self.loss = torch.where(improved, losses.detach(), self.loss)
        for name, parameter in self.model.named_parameters():
            self.state[name][improved] = parameter.detach()[improved]

    def restore(self, members: torch.Tensor | None = None) -> None:
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if members is None:
                    parameter.copy_(self.state[name])
                else:
                    parameter[members] = self.state[name][members]


def _gradient_masks(
    model: QSIRModel, active: torch.Tensor, freeze_rates: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-member 0/1 masks: ``active`` members train; frozen gamma and delta stay put."""
    masks = {}
    fixed_gamma = torch.isfinite(model.fixed_gamma)
    for name, _ in model.named_parameters():
        mask = active.clone()
        if name == "log_gamma":
            mask &= ~fixed_gamma & ~freeze_rates
        if name == "log_delta":
            mask &= ~freeze_rates
        masks[name] = mask
    return masks


def _apply_masks(model: QSIRModel, masks: dict[str, torch.Tensor]) -> None:
    for name, parameter in model.named_parameters():
        if parameter.grad is None:
            continue
        shape = (-1,) + (1,) * (parameter.dim() - 1)
        parameter.grad.mul_(masks[name].reshape(shape).to(parameter.dtype))
        torch.nan_to_num_(parameter.grad, nan=0.0, posinf=0.0, neginf=0.0)


def _run_stage(
    model: QSIRModel,
    targets: Targets,
    config: FitConfig,
    masks: dict[str, torch.Tensor],
    adam_steps: int,
    progress: object | None,
    checkpoint: _Checkpointer | None,
    stage: str,
) -> torch.Tensor:
    """Run Adam then L-BFGS on the members with a nonzero mask; return the min losses."""
    tracker = _MinLossTracker(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.adam_lr)
    first_step = 0
    if checkpoint is not None:
        first_step = checkpoint.resume(stage, model, optimizer, tracker)
    fast = adjoint_problem(model, targets, config)
    for step in range(first_step, adam_steps):
        optimizer.zero_grad()
        losses = losses_and_gradients(model, targets, config, fast)
        tracker.update(losses)
        finite = torch.isfinite(losses)
        _apply_masks(model, masks)
        optimizer.step()
        model.apply_fixed_()
        if not finite.all():
            tracker.restore(~finite)
        if progress is not None:
            progress.update(1)
        if checkpoint is not None:
            checkpoint.maybe_save(stage, step + 1, model, optimizer, tracker)
    tracker.update(member_losses(model, targets, config).detach())
    tracker.restore()
    if config.lbfgs_steps > 0:
        _run_lbfgs(model, targets, config, masks, tracker, fast)
        tracker.restore()
    if progress is not None and config.lbfgs_steps > 0:
        progress.update(config.lbfgs_steps)
    return tracker.loss


def _run_lbfgs(
    model: QSIRModel,
    targets: Targets,
    config: FitConfig,
    masks: dict[str, torch.Tensor],
    tracker: _MinLossTracker,
    fast: AdjointProblem | None,
) -> None:
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=config.lbfgs_steps,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        losses = losses_and_gradients(model, targets, config, fast)
        tracker.update(losses)
        total = losses.sum()
        if not torch.isfinite(total):
            return torch.tensor(math.inf, dtype=DTYPE)
        _apply_masks(model, masks)
        return total

    try:
        optimizer.step(closure)
    except RuntimeError as error:  # a diverged line search; the min-loss iterate is kept
        logger.warning("L-BFGS stopped early: %s", error)
    model.apply_fixed_()


class _Checkpointer:
    """Saves the optimiser state every ``every`` Adam steps so an interrupted fit resumes."""

    def __init__(self, path: Path, signature: dict, every: int = 50):
        self.path = path
        self.signature = signature
        self.every = every
        self.saved: dict | None = None
        if path.is_file():
            saved = load_torch(path)
            if saved.get("signature") == signature:
                self.saved = saved
                logger.info("resuming the interrupted fit from %s", path)

    def resume(self, stage, model, optimizer, tracker) -> int:
        if self.saved is None or self.saved["stage"] != stage:
            return 0
        model.load_state_dict(self.saved["model"])
        optimizer.load_state_dict(self.saved["optimizer"])
        tracker.loss = self.saved["best_loss"]
        tracker.state = self.saved["best_state"]
        return int(self.saved["step"])

    def maybe_save(self, stage, step, model, optimizer, tracker) -> None:
        if step % self.every:
            return
        save_torch(
            self.path,
            {
                "signature": self.signature,
                "stage": stage,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_loss": tracker.loss,
                "best_state": tracker.state,
            },
        )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def fit_regions(
    problems: list[FitProblem],
    config: FitConfig | None = None,
    *,
    progress: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
) -> FitResult:
    """Fit the quarantine model to several regions and seeds at once.

    Stage 1 fits every member on its loss. Stage 2 (regions whose recovered counts are
    unreliable, or ``two_stage="always"``) redraws the network from its seed, freezes gamma
    and delta and refits the network and beta on the infected term alone. Each stage runs
    Adam, then L-BFGS, and keeps every member's lowest-loss parameters.

    Args:
        problems: regions to fit, each with its options.
        config: fit settings (default :class:`FitConfig`).
        progress: show a tqdm progress bar.
        checkpoint_path: file for periodic optimiser checkpoints; an interrupted fit with the
            same regions and settings resumes from it. Removed when the fit finishes.
        checkpoint_every: Adam steps between checkpoints.

    Returns:
        The :class:`FitResult` with every member's min-loss parameters and loss.

    Raises:
        DefusalError: no problems, or a window with fewer than 3 usable days.
    """
    config = config or FitConfig()
    if not problems:
        raise DefusalError("no region to fit")
    torch.manual_seed(config.seeds[0])
    targets = build_targets(problems, config)
    model = build_model(problems, config)
    members = model.members
    per_region = len(config.seeds)
    second = torch.tensor(
        [problem.uses_two_stage(config) for problem in problems for _ in range(per_region)]
    )
    total_steps = config.adam_steps + config.lbfgs_steps
    if second.any():
        total_steps += config.stage2_steps + config.lbfgs_steps
    bar = None
    if progress:
        from tqdm import tqdm

        regions = ", ".join(problem.series.region for problem in problems)
        bar = tqdm(total=total_steps, desc=f"fit {regions}", unit="step", leave=False)
    checkpoint = None
    if checkpoint_path is not None:
        signature = {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(config),
            "regions": [
                (p.series.region, p.series.days.tolist(), p.fixed_gamma, p.loss) for p in problems
            ],
        }
        checkpoint = _Checkpointer(Path(checkpoint_path), signature, checkpoint_every)

    everyone = torch.ones(members, dtype=torch.bool)
    nobody = torch.zeros(members, dtype=torch.bool)
    stages = ["stage 1: all terms"]
    losses = _run_stage(
        model, targets, config, _gradient_masks(model, everyone, nobody), config.adam_steps,
        bar, checkpoint, "stage1",
    )  # fmt: skip
    if second.any():
        stages.append("stage 2: infected term, gamma and delta frozen")
        if config.reinit_stage2 and model.net is not None:
            model.net.reset_parameters(model.seeds, torch.nonzero(second).flatten())
        targets.removed_weight = torch.where(second, 0.0, targets.removed_weight)
        stage2 = _run_stage(
            model, targets, config, _gradient_masks(model, second, second), config.stage2_steps,
            bar, checkpoint, "stage2",
        )  # fmt: skip
        losses = torch.where(second, stage2, losses)
    if bar is not None:
        bar.close()
    if checkpoint is not None:
        checkpoint.remove()
    model.requires_grad_(False)
    return FitResult(model, problems, config, losses, stages)


def fit_region(
    series: RegionSeries,
    config: FitConfig | None = None,
    *,
    fixed_gamma: float | None = None,
    loss: str = "both",
    progress: bool = False,
) -> FitResult:
    """Fit one region (all seeds of ``config``); see :func:`fit_regions`."""
    problem = FitProblem(series, fixed_gamma=fixed_gamma, loss=loss)
    return fit_regions([problem], config, progress=progress)


def save_fit(path: str | os.PathLike, result: FitResult) -> None:
    """Save a fit atomically (model weights, settings, training windows)."""
    save_torch(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "kind": "defusal.epidemic.fit",
            "config": dataclasses.asdict(result.config),
            "problems": result.problems,
            "model": result.model.state_dict(),
            "losses": result.losses,
            "stages": result.stages,
        },
    )


def load_fit(path: str | os.PathLike) -> FitResult:
    """Load a fit written by :func:`save_fit`.

    Raises:
        DefusalError: missing or unreadable file, or not a saved epidemic fit.
    """
    saved = load_torch(path)
    if not isinstance(saved, dict) or saved.get("kind") != "defusal.epidemic.fit":
        raise DefusalError(f"{path} is not a saved epidemic fit; run `defusal epidemic fit`")
    config = FitConfig(**saved["config"])
    problems = saved["problems"]
    model = build_model(problems, config)
    model.load_state_dict(saved["model"])
    model.requires_grad_(False)
    return FitResult(model, problems, config, saved["losses"], saved["stages"])
