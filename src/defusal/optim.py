r"""Optimizers of the LSC experiments: AdaBelief, Lookahead, and a factory by name.

AdaBelief (Zhuang et al., NeurIPS 2020) is Adam with the second moment replaced by the
"belief" :math:`s_t`, the running variance of the gradient around its running mean:

.. math::
    m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
    s_t &= \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_t)^2 + \epsilon \\
    \theta_t &= \theta_{t-1} - \eta \, \frac{m_t / (1 - \beta_1^t)}
                {\sqrt{s_t / (1 - \beta_2^t)} + \epsilon}

Lookahead (Zhang et al., NeurIPS 2019) wraps any optimizer: the wrapped ("fast") optimizer
takes ``k`` steps, then the slow weights move toward the fast ones,
:math:`\phi \leftarrow \phi + \alpha (\theta - \phi)`, and the fast weights restart from them,
:math:`\theta \leftarrow \phi`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from defusal.errors import DefusalError

OPTIMIZERS = ("adamw", "adam", "adabelief", "sgd")


class AdaBelief(torch.optim.Optimizer):
    r"""AdaBelief: Adam whose denominator tracks the variance of the gradient around its mean.

    See the module docstring for the update. With ``decoupled=True`` the weight decay is
    applied to the weights directly, :math:`\theta \leftarrow \theta (1 - \eta \lambda)`,
    before the update (as in AdamW); otherwise :math:`\lambda \theta` is added to the gradient.

    Args:
        params: parameters or parameter groups.
        lr: learning rate :math:`\eta`.
        betas: :math:`(\beta_1, \beta_2)`, decay rates of the first moment and the belief.
        eps: :math:`\epsilon`, added to the belief at every step and to its square root.
        weight_decay: :math:`\lambda`.
        decoupled: decouple the weight decay from the gradient.

    Raises:
        DefusalError: a hyper-parameter out of range.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        decoupled: bool = True,
    ) -> None:
        _check_learning_rate(lr)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise DefusalError(f"AdaBelief betas must be in [0, 1), got {betas}")
        if not eps >= 0.0:
            raise DefusalError(f"AdaBelief eps must be non-negative, got {eps}")
        _check_weight_decay(weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled": decoupled,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one optimisation step.

        Args:
            closure: re-evaluates the model and returns the loss, as for any torch optimizer.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise DefusalError("AdaBelief does not support sparse gradients")
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_belief"] = torch.zeros_like(param)

                if weight_decay:
                    if group["decoupled"]:
                        param.mul_(1.0 - lr * weight_decay)
                    else:
                        grad = grad.add(param, alpha=weight_decay)

                state["step"] += 1
                exp_avg, belief = state["exp_avg"], state["exp_avg_belief"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                deviation = grad - exp_avg
                belief.mul_(beta2).addcmul_(deviation, deviation, value=1.0 - beta2).add_(eps)

                bias_correction1 = 1.0 - beta1 ** state["step"]
                bias_correction2 = 1.0 - beta2 ** state["step"]
                denominator = (belief / bias_correction2).sqrt_().add_(eps)
                param.addcdiv_(exp_avg, denominator, value=-lr / bias_correction1)
        return loss


class Lookahead(torch.optim.Optimizer):
    r"""Lookahead: every ``k`` steps of a wrapped optimizer, pull slow weights toward fast ones.

    The slow weights :math:`\phi` are copied from the parameters at the first :meth:`step`
    (so weights changed between construction and training, for example by pre-training, are
    the starting point). After every ``k``-th step of the wrapped optimizer,
    :math:`\phi \leftarrow \phi + \alpha (\theta - \phi)` and :math:`\theta \leftarrow \phi`.
    ``param_groups`` is the wrapped optimizer's list, so learning-rate schedulers act on it.
    :meth:`state_dict` contains the wrapped optimizer's state, the slow weights and the step
    count, so a run resumed from a checkpoint takes exactly the same steps.

    Args:
        optimizer: the wrapped ("fast") optimizer.
        k: fast steps per slow update.
        alpha: slow step size, in ``(0, 1]``.

    Raises:
        DefusalError: ``k`` or ``alpha`` out of range.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DefusalError(f"Lookahead k must be a positive integer, got {k!r}")
        if not 0.0 < alpha <= 1.0:
            raise DefusalError(f"Lookahead alpha must be in (0, 1], got {alpha}")
        self.optimizer = optimizer
        self.k = k
        self.alpha = float(alpha)
        self.fast_steps = 0
        self._sharing_groups = False
        super().__init__(optimizer.param_groups, {})
        # Share the wrapped optimizer's list itself, so its groups are never copied or stale.
        self.param_groups = optimizer.param_groups
        self._sharing_groups = True

    def _parameters(self) -> list[Tensor]:
        return [param for group in self.param_groups for param in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step of the wrapped optimizer, and a slow update every ``k`` steps.

        Returns:
            The closure's loss, or ``None``.
        """
        for param in self._parameters():
            if "slow" not in self.state[param]:
                self.state[param]["slow"] = param.detach().clone()

        with torch.enable_grad():
            loss = self.optimizer.step(closure)
        self.fast_steps += 1

        if self.fast_steps % self.k == 0:
            for param in self._parameters():
                slow = self.state[param]["slow"]
                slow.add_(param - slow, alpha=self.alpha)
                param.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the wrapped optimizer."""
        if not self._sharing_groups:
            # The base-class constructor adds the wrapped optimizer's own groups: nothing to do.
            return
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """Return the wrapped optimizer's state, the slow weights (by parameter index), the step
        count, ``k`` and ``alpha``."""
        slow = {
            index: self.state[param]["slow"].clone()
            for index, param in enumerate(self._parameters())
            if "slow" in self.state[param]
        }
        return {
            "optimizer": self.optimizer.state_dict(),
            "slow": slow,
            "fast_steps": self.fast_steps,
            "k": self.k,
            "alpha": self.alpha,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`.

        Raises:
            DefusalError: the state does not come from a Lookahead optimizer or its slow weights
                do not match the parameters.
        """
        missing = {"optimizer", "slow", "fast_steps", "k", "alpha"} - set(state_dict)
        if missing:
            raise DefusalError(
                f"not a Lookahead optimizer state: missing {', '.join(sorted(missing))}"
            )
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.param_groups = self.optimizer.param_groups

        parameters = self._parameters()
        self.state.clear()
        for index, slow in state_dict["slow"].items():
            index = int(index)
            if index >= len(parameters) or slow.shape != parameters[index].shape:
                raise DefusalError(
                    f"Lookahead state has slow weights for parameter {index} of shape "
                    f"{tuple(slow.shape)}, which does not match the model"
                )
            param = parameters[index]
            self.state[param]["slow"] = slow.to(device=param.device, dtype=param.dtype).clone()
        self.fast_steps = int(state_dict["fast_steps"])
        self.k = int(state_dict["k"])
        self.alpha = float(state_dict["alpha"])

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, optimizer={self.optimizer!r})"


def build_optimizer(
    name: str,
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float = 0.0,
    lookahead: bool = False,
    *,
    k: int = 6,
    alpha: float = 0.5,
    **options: Any,
) -> torch.optim.Optimizer:
    """Build an optimizer by name, optionally wrapped in :class:`Lookahead`.

    ``"adamw"`` and ``"adabelief"`` decouple the weight decay from the gradient; ``"adam"`` and
    ``"sgd"`` add ``weight_decay * theta`` to it. ``"sgd"`` is plain SGD unless
    ``momentum=`` is passed in ``options``.

    Args:
        name: one of :data:`OPTIMIZERS`.
        params: parameters or parameter groups.
        lr: learning rate, positive and finite.
        weight_decay: weight decay, non-negative.
        lookahead: wrap the optimizer in :class:`Lookahead`.
        k: Lookahead's fast steps per slow update.
        alpha: Lookahead's slow step size.
        **options: further keyword arguments of the optimizer's constructor.

    Returns:
        The optimizer.

    Raises:
        DefusalError: unknown name or option, or a hyper-parameter out of range.
    """
    classes: dict[str, type[torch.optim.Optimizer]] = {
        "adamw": torch.optim.AdamW,
        "adam": torch.optim.Adam,
        "adabelief": AdaBelief,
        "sgd": torch.optim.SGD,
    }
    if name not in classes:
        raise DefusalError(f"unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    _check_learning_rate(lr)
    _check_weight_decay(weight_decay)
    try:
        optimizer = classes[name](params, lr=lr, weight_decay=weight_decay, **options)
    except TypeError as error:
        raise DefusalError(f"invalid option for optimizer {name!r}: {error}") from None
    if lookahead:
        optimizer = Lookahead(optimizer, k=k, alpha=alpha)
    return optimizer


def _check_learning_rate(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise DefusalError(f"learning rate must be positive and finite, got {lr!r}")


def _check_weight_decay(weight_decay: float) -> None:
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay)):
        raise DefusalError(f"weight decay must be a finite number, got {weight_decay!r}")
    if weight_decay < 0:
        raise DefusalError(f"weight decay must be non-negative, got {weight_decay}")
