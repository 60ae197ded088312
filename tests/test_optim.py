"""AdaBelief and Lookahead against hand-computed updates; checkpoint round trips; the factory."""

from __future__ import annotations

import math

import pytest
import torch

from defusal.errors import DefusalError
from defusal.io import load_torch, save_torch
from defusal.optim import AdaBelief, Lookahead, build_optimizer

GRADIENTS = ([0.5, -1.0], [0.1, 0.3])


def adabelief_by_hand(start, gradients, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=True):
    """AdaBelief steps in plain floats, one coordinate at a time."""
    result = []
    for index, theta in enumerate(start):
        m = s = 0.0
        for step, gradient in enumerate(gradients, start=1):
            g = gradient[index]
            if decoupled:
                theta *= 1.0 - lr * weight_decay
            else:
                g += weight_decay * theta
            m = beta1 * m + (1 - beta1) * g
            s = beta2 * s + (1 - beta2) * (g - m) ** 2 + eps
            m_hat = m / (1 - beta1**step)
            s_hat = s / (1 - beta2**step)
            theta -= lr * m_hat / (math.sqrt(s_hat) + eps)
        result.append(theta)
    return result


def run_with_gradients(optimizer_factory, start, gradients):
    param = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    optimizer = optimizer_factory([param])
    trajectory = []
    for gradient in gradients:
        param.grad = torch.tensor(gradient, dtype=torch.float64)
        optimizer.step()
        trajectory.append(param.detach().clone())
    return trajectory


@pytest.mark.parametrize("steps", [1, 2])
def test_adabelief_matches_hand_update(steps):
    start = [1.0, -2.0]
    expected = adabelief_by_hand(start, GRADIENTS[:steps], 0.1, 0.9, 0.999, 1e-8)
    trajectory = run_with_gradients(
        lambda p: AdaBelief(p, lr=0.1, eps=1e-8), start, GRADIENTS[:steps]
    )
    assert trajectory[-1].tolist() == pytest.approx(expected, rel=1e-12)


def test_adabelief_decoupled_decay():
    start = [1.0, -2.0]
    expected = adabelief_by_hand(start, GRADIENTS, 0.1, 0.9, 0.99, 1e-8, weight_decay=0.5)
    trajectory = run_with_gradients(
        lambda p: AdaBelief(p, lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5),
        start,
        GRADIENTS,
    )
    assert trajectory[-1].tolist() == pytest.approx(expected, rel=1e-12)


def test_adabelief_coupled_decay():
    start = [1.0, -2.0]
    expected = adabelief_by_hand(
        start, GRADIENTS, 0.1, 0.9, 0.99, 1e-8, weight_decay=0.5, decoupled=False
    )
    trajectory = run_with_gradients(
        lambda p: AdaBelief(
            p, lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5, decoupled=False
        ),
        start,
        GRADIENTS,
    )
    assert trajectory[-1].tolist() == pytest.approx(expected, rel=1e-12)


def test_adabelief_first_step_is_sign_step():
    # After one step m_hat = g and s_hat = (0.9 g)^2 + eps / 0.001, so the step is lr / 0.9.
    trajectory = run_with_gradients(lambda p: AdaBelief(p, lr=0.01), [0.0, 0.0], [[2.0, -3.0]])
    assert trajectory[0].tolist() == pytest.approx([-0.01 / 0.9, 0.01 / 0.9], rel=1e-9)


def test_adabelief_converges_on_quadratic():
    curvature = torch.tensor([1.0, 10.0], dtype=torch.float64)
    minimum = torch.tensor([3.0, -1.0], dtype=torch.float64)
    param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = AdaBelief([param], lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        loss = 0.5 * (curvature * (param - minimum) ** 2).sum()
        loss.backward()
        optimizer.step()
    assert torch.allclose(param.detach(), minimum, atol=1e-3)


def test_lookahead_slow_update_after_k():
    lr, k, alpha = 0.1, 3, 0.5
    gradient = torch.tensor([1.0, -2.0], dtype=torch.float64)
    start = torch.tensor([0.5, 0.25], dtype=torch.float64)
    param = torch.nn.Parameter(start.clone())
    optimizer = Lookahead(torch.optim.SGD([param], lr=lr), k=k, alpha=alpha)

    slow = start.clone()
    for step in range(1, 2 * k + 1):
        param.grad = gradient.clone()
        optimizer.step()
        fast = slow - (step - 1) % k * lr * gradient - lr * gradient
        if step % k == 0:
            slow = slow + alpha * (fast - slow)
            assert torch.allclose(param.detach(), slow, rtol=0, atol=1e-15)
        else:
            assert torch.allclose(param.detach(), fast, rtol=0, atol=1e-15)


def test_lookahead_slow_weights_start_at_first_step():
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = Lookahead(torch.optim.SGD([param], lr=1.0), k=2, alpha=0.5)
    with torch.no_grad():
        param.fill_(4.0)
    for _ in range(2):
        param.grad = torch.ones(1, dtype=torch.float64)
        optimizer.step()
    assert param.item() == pytest.approx(4.0 + 0.5 * (2.0 - 4.0))


def train_steps(model, optimizer, batches):
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("lookahead", [False, True])
def test_checkpoint_resume_identical(tmp_path, lookahead):
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 4, generator=generator), torch.randn(8, 2, generator=generator))]
    batches = batches * 9

    torch.manual_seed(1)
    model = torch.nn.Linear(4, 2)
    optimizer = build_optimizer("adabelief", model.parameters(), 1e-2, 1e-4, lookahead=lookahead)
    train_steps(model, optimizer, batches[:4])
    save_torch(
        tmp_path / "checkpoint.pt", {"model": model.state_dict(), "opt": optimizer.state_dict()}
    )
    train_steps(model, optimizer, batches[4:])
    continued = [p.detach().clone() for p in model.parameters()]

    checkpoint = load_torch(tmp_path / "checkpoint.pt")
    resumed_model = torch.nn.Linear(4, 2)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = build_optimizer(
        "adabelief", resumed_model.parameters(), 1e-2, 1e-4, lookahead=lookahead
    )
    resumed.load_state_dict(checkpoint["opt"])
    train_steps(resumed_model, resumed, batches[4:])
    for expected, actual in zip(continued, resumed_model.parameters(), strict=True):
        assert torch.equal(expected, actual.detach())


def test_lookahead_with_scheduler_shares_groups():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer("adam", [param], 1e-2, lookahead=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    param.grad = torch.ones(1)
    optimizer.step()
    scheduler.step()
    assert optimizer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("adamw", torch.optim.AdamW),
        ("adam", torch.optim.Adam),
        ("adabelief", AdaBelief),
        ("sgd", torch.optim.SGD),
    ],
)
def test_build_optimizer_names(name, expected):
    optimizer = build_optimizer(name, [torch.nn.Parameter(torch.zeros(1))], 1e-3, 1e-4)
    assert type(optimizer) is expected
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_build_optimizer_lookahead_wraps():
    optimizer = build_optimizer("adabelief", [torch.nn.Parameter(torch.zeros(1))], 1e-3, 0, True)
    assert isinstance(optimizer, Lookahead)
    assert isinstance(optimizer.optimizer, AdaBelief)
    assert optimizer.k == 6
    assert optimizer.alpha == 0.5


def test_unknown_optimizer_one_line():
    with pytest.raises(DefusalError) as raised:
        build_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(1))], 1e-3, 0.0)
    message = str(raised.value)
    assert "'rmsprop'" in message
    assert "adabelief" in message
    assert "\n" not in message


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_invalid_learning_rate_rejected(lr):
    with pytest.raises(DefusalError, match="learning rate"):
        build_optimizer("sgd", [torch.nn.Parameter(torch.zeros(1))], lr, 0.0)


def test_invalid_lookahead_settings_rejected():
    inner = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(DefusalError, match="k must be"):
        Lookahead(inner, k=0)
    with pytest.raises(DefusalError, match="alpha"):
        Lookahead(inner, alpha=1.5)
