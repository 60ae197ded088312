"""Build a deep recurrent network of any kind by name."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from defusal.errors import DefusalError
from defusal.nets.alif import ALIFCell
from defusal.nets.base import RecurrentStack
from defusal.nets.cells import GRUCell, LSTMCell, SimpleRNNCell
from defusal.nets.init import INIT_SCHEMES, initialize_
from defusal.nets.lru import LRUStack, ResidualLRUCell

NETWORKS = ("lstm", "gru", "relu_rnn", "sigmoid_rnn", "alif", "alif_b", "lru")

# Per kind: the cell class and the constructor arguments the kind fixes itself.
_CELLS: dict[str, tuple[type[nn.Module], dict]] = {
    "lstm": (LSTMCell, {}),
    "gru": (GRUCell, {}),
    "relu_rnn": (SimpleRNNCell, {"activation": "relu"}),
    "sigmoid_rnn": (SimpleRNNCell, {"activation": "sigmoid"}),
    "alif": (ALIFCell, {}),
    "alif_b": (ALIFCell, {"random_beta": True}),
    "lru": (ResidualLRUCell, {}),
}


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DefusalError(f"{name} must be a positive integer, got {value!r}")
    return value


def _layer_widths(hidden_size: int | Sequence[int], num_layers: int) -> list[int]:
    if isinstance(hidden_size, int | bool):
        return [_positive_int("hidden_size", hidden_size)] * num_layers
    widths = list(hidden_size)
    if len(widths) != num_layers:
        raise DefusalError(
            f"hidden_size lists {len(widths)} widths for {num_layers} layers; give one per layer"
        )
    return [_positive_int("hidden_size", width) for width in widths]


def _cell_factory(kind: str, cell_options: dict) -> Callable[[int, int], nn.Module]:
    """Return ``make(input_size, width) -> cell`` for ``kind``, with the options checked."""
    cell_class, fixed = _CELLS[kind]
    parameters = inspect.signature(cell_class.__init__).parameters
    allowed = [name for name in list(parameters)[3:] if name not in fixed]
    unknown = sorted(set(cell_options) - set(allowed))
    if unknown:
        choices = ", ".join(allowed) if allowed else "none"
        raise DefusalError(
            f"unknown option(s) {', '.join(unknown)} for network {kind!r}; valid options: {choices}"
        )
    options = {**fixed, **cell_options}

    def make(input_size: int, width: int) -> nn.Module:
        return cell_class(input_size, width, **options)

    return make


def build_network(
    kind: str,
    input_size: int | None,
    hidden_size: int | Sequence[int],
    num_layers: int,
    output_size: int | None,
    *,
    vocab_size: int | None = None,
    embedding_size: int | None = None,
    tie_weights: bool = False,
    init: str = "default",
    seed: int | None = None,
    **cell_options,
) -> RecurrentStack:
    """Build a deep recurrent network: encoder, ``num_layers`` cells of one kind, readout.

    Kinds (:data:`NETWORKS`): ``"lstm"``, ``"gru"``, ``"relu_rnn"``, ``"sigmoid_rnn"``
    (:class:`SimpleRNNCell`), ``"alif"``, ``"alif_b"`` (:class:`ALIFCell`, the latter with random
    Gaussian ``beta``), ``"lru"`` (:class:`ResidualLRUCell` layers in an :class:`LRUStack`).

    Args:
        kind: the network kind.
        input_size: features per time step of ``x`` ``(batch, time, input_size)``; with
            ``vocab_size`` pass ``None`` (or ``vocab_size``).
        hidden_size: width of every layer, or a sequence of ``num_layers`` widths.
        num_layers: depth ``L``.
        output_size: features of the readout ``nn.Linear(top width, output_size)``; ``None`` for
            no readout (the output is the top layer's output).
        vocab_size: if given, the encoder is ``nn.Embedding(vocab_size, embedding_size)`` and
            ``x`` contains token ids ``(batch, time)``.
        embedding_size: embedding width; the first layer's width when omitted.
        tie_weights: share the embedding matrix with the readout weight; needs
            ``output_size == vocab_size`` and a top layer as wide as the embedding.
        init: initialization scheme of :func:`defusal.nets.init.initialize_`.
        seed: if given, the weights are drawn from ``torch.manual_seed(seed)`` without changing
            the global random state.
        **cell_options: keyword arguments of the cell constructor (for example ``tau_m`` for
            ALIF, ``dropout`` or ``r_min`` for LRU).

    Returns:
        A :class:`RecurrentStack` (an :class:`LRUStack` for ``"lru"``).

    Raises:
        DefusalError: for an unknown kind, scheme or option, a non-positive size, or sizes that
            do not fit together.
    """
    if kind not in NETWORKS:
        raise DefusalError(f"unknown network {kind!r}; choose one of {', '.join(NETWORKS)}")
    if init not in INIT_SCHEMES:
        raise DefusalError(
            f"unknown initialization {init!r}; choose one of {', '.join(INIT_SCHEMES)}"
        )
    num_layers = _positive_int("num_layers", num_layers)
    widths = _layer_widths(hidden_size, num_layers)
    if output_size is not None:
        output_size = _positive_int("output_size", output_size)
    make_cell = _cell_factory(kind, cell_options)

    if vocab_size is not None:
        vocab_size = _positive_int("vocab_size", vocab_size)
        if input_size is not None and input_size != vocab_size:
            raise DefusalError(
                f"input_size {input_size} differs from vocab_size {vocab_size}; with token ids "
                "pass input_size=None"
            )
        embedding_size = widths[0] if embedding_size is None else embedding_size
        first_input = _positive_int("embedding_size", embedding_size)
    else:
        if embedding_size is not None or tie_weights:
            raise DefusalError(
                "embedding_size and tie_weights need vocab_size; pass vocab_size for token inputs"
            )
        first_input = _positive_int("input_size", input_size)

    if tie_weights:
        if output_size != vocab_size:
            raise DefusalError(
                f"tie_weights needs output_size == vocab_size, got {output_size} and {vocab_size}"
            )
        if widths[-1] != first_input:
            raise DefusalError(
                f"tie_weights needs the top layer width {widths[-1]} to equal the embedding "
                f"size {first_input}; set the last hidden size to {first_input}"
            )

    seeded = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with seeded:
        if seed is not None:
            torch.manual_seed(seed)
        cells = []
        layer_input = first_input
        for width in widths:
            cells.append(make_cell(layer_input, width))
            layer_input = cells[-1].output_size

        encoder = None if vocab_size is None else nn.Embedding(vocab_size, first_input)
        readout = None if output_size is None else nn.Linear(layer_input, output_size)
        if kind == "lru":
            network = LRUStack(cells, encoder=encoder, readout=readout)
        else:
            network = RecurrentStack(cells, encoder=encoder, readout=readout)
        initialize_(network, init)
        if tie_weights:
            readout.weight = encoder.weight
    return network
