"""Gated and simple RNN cells against torch.nn, conversion, initializations, FFN and the factory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from defusal.errors import DefusalError
from defusal.nets import (
    NETWORKS,
    DeepFFN,
    FusedRecurrentNetwork,
    GRUCell,
    LSTMCell,
    RecurrentStack,
    SimpleRNNCell,
    build_network,
    from_torch,
    initialize_,
    stack_from_torch,
    to_torch,
)

TOLERANCE = 1e-5


def _random_states(module: nn.RNNBase, batch: int) -> tuple[list[torch.Tensor], object]:
    """Return the same random initial state in the flat cell format and in the torch format."""
    layers, hidden = module.num_layers, module.hidden_size
    h0 = torch.randn(layers, batch, hidden)
    if isinstance(module, nn.LSTM):
        c0 = torch.randn(layers, batch, hidden)
        return [torch.cat([h0[i], c0[i]], dim=-1) for i in range(layers)], (h0, c0)
    return list(h0.unbind(0)), h0


def _torch_final_states(module: nn.RNNBase, final) -> list[torch.Tensor]:
    if isinstance(module, nn.LSTM):
        h_n, c_n = final
        return [torch.cat([h_n[i], c_n[i]], dim=-1) for i in range(len(h_n))]
    return list(final.unbind(0))


@pytest.mark.parametrize("torch_class", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_from_torch_matches_reference(torch_class, num_layers):
    torch.manual_seed(0)
    reference = torch_class(5, 12, num_layers=num_layers, batch_first=True)
    stack = stack_from_torch(reference)
    x = torch.randn(3, 9, 5)
    flat_states, torch_states = _random_states(reference, 3)

    expected, expected_final = reference(x, torch_states)
    y, final = stack(x, flat_states)

    assert torch.allclose(y, expected, atol=TOLERANCE)
    for ours, theirs in zip(final, _torch_final_states(reference, expected_final), strict=True):
        assert torch.allclose(ours, theirs, atol=TOLERANCE)


@pytest.mark.parametrize("cell_class", [LSTMCell, GRUCell])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_to_torch_matches_stack(cell_class, num_layers):
    torch.manual_seed(1)
    cells = [cell_class(4 if i == 0 else 10, 10) for i in range(num_layers)]
    stack = RecurrentStack(cells)
    fused = to_torch(stack)
    x = torch.randn(2, 11, 4)
    flat_states, torch_states = _random_states(fused, 2)

    expected, expected_final = fused(x, torch_states)
    y, final = stack(x, flat_states)

    assert isinstance(fused, nn.LSTM if cell_class is LSTMCell else nn.GRU)
    assert fused.batch_first
    assert torch.allclose(y, expected, atol=TOLERANCE)
    for ours, theirs in zip(final, _torch_final_states(fused, expected_final), strict=True):
        assert torch.allclose(ours, theirs, atol=TOLERANCE)


def test_relu_rnn_matches_torch():
    torch.manual_seed(2)
    reference = nn.RNN(6, 8, num_layers=2, nonlinearity="relu", batch_first=True)
    cells = from_torch(reference)
    x = torch.randn(4, 7, 6)

    expected, expected_final = reference(x)
    y, final = RecurrentStack(cells)(x)

    assert all(cell.activation == "relu" for cell in cells)
    assert torch.allclose(y, expected, atol=TOLERANCE)
    assert torch.allclose(final[1], expected_final[1], atol=TOLERANCE)


def test_sigmoid_rnn_one_step():
    torch.manual_seed(3)
    cell = SimpleRNNCell(3, 4, activation="sigmoid")
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
    b = (cell.bias_ih + cell.bias_hh).detach()

    expected = 1.0 / (1.0 + torch.exp(-(x @ w_ih.T + h @ w_hh.T + b)))
    y, new_state = cell(x, h)

    assert torch.allclose(new_state, expected, atol=1e-6)
    assert torch.equal(y, new_state)


def test_rnn_activation_unknown():
    with pytest.raises(DefusalError, match="softsign"):
        SimpleRNNCell(3, 4, activation="softsign")


def test_to_torch_rejects_mixed_stack():
    stack = RecurrentStack([LSTMCell(3, 4), GRUCell(4, 4)])
    with pytest.raises(DefusalError, match="GRUCell"):
        to_torch(stack)


def test_to_torch_rejects_sigmoid_rnn():
    with pytest.raises(DefusalError, match="sigmoid"):
        to_torch([SimpleRNNCell(3, 4, activation="sigmoid")])


def test_from_torch_rejects_bidirectional():
    with pytest.raises(DefusalError, match="bidirectional"):
        from_torch(nn.GRU(3, 4, bidirectional=True))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fused_network_matches_stack(kind):
    stack = build_network(
        kind, None, 16, 2, 30, vocab_size=30, tie_weights=True, init="orthogonal", seed=4
    )
    fused = FusedRecurrentNetwork.from_stack(stack)
    tokens = torch.randint(0, 30, (3, 8))
    states = [torch.randn(3, cell.state_size) for cell in stack.cells]

    y_stack, final_stack = stack(tokens, states)
    y_fused, final_fused = fused(tokens, states)

    assert fused.readout.weight is fused.encoder.weight
    assert torch.allclose(y_fused, y_stack, atol=TOLERANCE)
    for ours, theirs in zip(final_fused, final_stack, strict=True):
        assert torch.allclose(ours, theirs, atol=TOLERANCE)


def test_fused_network_round_trip_exact():
    stack = build_network("lstm", 5, 8, 3, 2, seed=5)
    fused = FusedRecurrentNetwork.from_stack(stack)
    with torch.no_grad():
        for parameter in fused.parameters():
            parameter.add_(torch.randn_like(parameter))

    fused.copy_to_stack_(stack)
    back = stack_from_torch(to_torch(stack))

    for layer in range(3):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            fused_weight = getattr(fused.rnn, f"{name}_l{layer}")
            assert torch.equal(getattr(stack.cells[layer], name), fused_weight)
            assert torch.equal(getattr(back.cells[layer], name), fused_weight)
    assert torch.equal(stack.readout.weight, fused.readout.weight)


def test_fused_network_state_format():
    fused = FusedRecurrentNetwork(nn.LSTM(3, 6, num_layers=2, batch_first=True))
    y, states = fused(torch.randn(2, 5, 3))
    assert y.shape == (2, 5, 6)
    assert [tuple(state.shape) for state in states] == [(2, 12), (2, 12)]


def test_init_orthogonal_recurrent():
    cell = SimpleRNNCell(10, 64)
    lstm = LSTMCell(10, 32)
    initialize_(nn.ModuleList([cell, lstm]), "orthogonal")
    w = cell.weight_hh.detach()
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-5)
    for block in lstm.weight_hh.detach().chunk(4):
        assert torch.allclose(block @ block.T, torch.eye(32), atol=1e-5)
    assert torch.count_nonzero(cell.bias_ih) == 0


def test_init_orthogonal_square_linear():
    square, wide = nn.Linear(48, 48), nn.Linear(48, 20)
    initialize_(nn.Sequential(square, wide), "orthogonal")
    w = square.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(48), atol=1e-5)
    assert not torch.allclose(wide.weight @ wide.weight.T, torch.eye(20), atol=1e-2)


def test_init_glorot_variance():
    torch.manual_seed(6)
    layer = nn.Linear(512, 256)
    initialize_(layer, "glorot")
    expected = 2.0 / (512 + 256)
    # Relative standard error of the sample variance of 131072 uniform draws is about 0.25%.
    assert abs(layer.weight.var().item() / expected - 1.0) < 0.03
    assert torch.count_nonzero(layer.bias) == 0


def test_init_glorot_normal_variance():
    torch.manual_seed(7)
    cell = SimpleRNNCell(300, 200)
    initialize_(cell, "glorot", distribution="normal")
    expected = 2.0 / (300 + 200)
    assert abs(cell.weight_ih.var().item() / expected - 1.0) < 0.03


def test_init_he_variance():
    torch.manual_seed(8)
    layer = nn.Linear(400, 300)
    initialize_(layer, "he")
    assert abs(layer.weight.var().item() / (2.0 / 400) - 1.0) < 0.03


def test_init_identity_irnn():
    torch.manual_seed(9)
    cell = SimpleRNNCell(100, 50)
    initialize_(cell, "identity")
    assert torch.equal(cell.weight_hh.detach(), torch.eye(50))
    assert abs(cell.weight_ih.std().item() - 1e-3) < 1e-4
    assert torch.count_nonzero(cell.bias_hh) == 0


def test_init_forget_bias():
    cell = LSTMCell(3, 5)
    initialize_(cell, "glorot", forget_bias=1.0)
    assert torch.equal(cell.bias_ih.detach()[5:10], torch.ones(5))
    assert torch.count_nonzero(cell.bias_ih.detach()[:5]) == 0
    assert torch.count_nonzero(cell.bias_hh) == 0


def test_init_default_keeps_weights():
    cell = GRUCell(3, 5)
    before = cell.weight_hh.detach().clone()
    initialize_(cell, "default")
    assert torch.equal(cell.weight_hh.detach(), before)


def test_init_unknown_scheme():
    with pytest.raises(DefusalError) as error:
        initialize_(nn.Linear(2, 2), "lecun")
    message = str(error.value)
    assert "lecun" in message
    assert "orthogonal" in message
    assert "\n" not in message


def test_ffn_layout_and_forward():
    torch.manual_seed(10)
    net = DeepFFN(input_size=20, width=16, depth=4, output_size=3, activation="sin")
    x = torch.randn(5, 20)
    first = net.layers[0]
    expected_first = torch.sin(x @ first.weight.detach().T + first.bias.detach())

    assert len(net.layers) == 2 * 4 + 1
    assert len(net.linears) == 5
    assert net(x).shape == (5, 3)
    assert torch.allclose(net.forward_range(x, 0, 2), expected_first, atol=1e-6)
    middle = net.forward_range(x, 0, 3)
    assert torch.allclose(net.forward_range(middle, 3, len(net.layers)), net(x), atol=1e-6)


def test_ffn_cos_and_relu():
    x = torch.randn(4, 6)
    cos_net = DeepFFN(6, 5, 2, 2, activation="cos")
    relu_net = DeepFFN(6, 5, 2, 2, activation="relu")
    first = cos_net.layers[0]
    expected = torch.cos(x @ first.weight.detach().T + first.bias.detach())
    assert torch.allclose(cos_net.forward_range(x, 0, 2), expected, atol=1e-6)
    assert bool((relu_net.forward_range(x, 0, 2) >= 0).all())


def test_ffn_flattens_images():
    net = DeepFFN(784, 8, 2, 10)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_ffn_bad_activation():
    with pytest.raises(DefusalError, match="gelu"):
        DeepFFN(activation="gelu")


@pytest.mark.parametrize("kind", NETWORKS)
def test_every_kind_trains(kind):
    net = build_network(kind, 6, 8, 2, 3, seed=11)
    x = torch.randn(4, 10, 6)
    y, states = net(x)
    loss = nn.functional.cross_entropy(y.reshape(-1, 3), torch.randint(0, 3, (40,)))
    loss.backward()

    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert y.shape == (4, 10, 3)
    assert len(states) == 2
    assert math.isfinite(loss.item())
    assert len(grads) > 0
    assert all(bool(torch.isfinite(grad).all()) for grad in grads)
    assert any(bool(grad.ne(0).any()) for grad in net.readout.parameters())


@pytest.mark.parametrize("kind", ["gru", "lru", "alif"])
def test_token_network_shapes(kind):
    net = build_network(kind, None, [12, 10], 2, 25, vocab_size=25, embedding_size=10)
    y, states = net(torch.randint(0, 25, (2, 6)))
    assert y.shape == (2, 6, 25)
    assert states[0].shape[1] == net.cells[0].state_size


def test_tied_weights_share_embedding():
    net = build_network("lstm", None, 9, 2, 40, vocab_size=40, tie_weights=True)
    assert net.readout.weight is net.encoder.weight


def test_factory_seed_reproducible():
    state = torch.random.get_rng_state()
    first = build_network("alif_b", 3, 7, 2, 2, seed=12, init="glorot")
    second = build_network("alif_b", 3, 7, 2, 2, seed=12, init="glorot")
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_factory_passes_cell_options():
    net = build_network("alif", 3, 7, 2, 2, tau_m=5.0)
    lru = build_network("lru", 3, 8, 1, 2, r_min=0.5, r_max=0.6, dropout=0.0)
    assert torch.equal(net.cells[1].tau_m.detach(), torch.full((7,), 5.0))
    assert lru.cells[0].lru.r_max == 0.6


@pytest.mark.parametrize(
    ("arguments", "options", "fragment"),
    [
        (("transformer", 3, 8, 2, 2), {}, "transformer"),
        (("lstm", 3, 0, 2, 2), {}, "hidden_size"),
        (("gru", 3, 8, -1, 2), {}, "num_layers"),
        (("gru", 3, [8, 8], 3, 2), {}, "3 layers"),
        (("lstm", 0, 8, 2, 2), {}, "input_size"),
        (("lstm", 3, 8, 2, 2), {"init": "lecun"}, "lecun"),
        (("lstm", 3, 8, 2, 2), {"tau_m": 3.0}, "tau_m"),
        (("lstm", None, 8, 2, 50), {"vocab_size": 40, "tie_weights": True}, "50"),
        (("lstm", None, [8, 6], 2, 40), {"vocab_size": 40, "tie_weights": True}, "6"),
        (("lstm", 3, 8, 2, 2), {"tie_weights": True}, "vocab_size"),
    ],
)
def test_factory_errors_one_line(arguments, options, fragment):
    with pytest.raises(DefusalError) as error:
        build_network(*arguments, **options)
    message = str(error.value)
    assert fragment in message
    assert "\n" not in message


def test_factory_unknown_kind_lists_choices():
    with pytest.raises(DefusalError) as error:
        build_network("rnn", 3, 8, 2, 2)
    for name in NETWORKS:
        assert name in str(error.value)
