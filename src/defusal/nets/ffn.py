"""Deep fully connected networks: ``depth`` Linear + activation blocks and a Linear readout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError


class Sin(nn.Module):
    """Element-wise ``sin``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


class Cos(nn.Module):
    """Element-wise ``cos``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cos(x)


FFN_ACTIVATIONS = {"sin": Sin, "cos": Cos, "relu": nn.ReLU, "tanh": nn.Tanh}


class DeepFFN(nn.Module):
    """A deep feed-forward classifier::

        x -> [Linear(., width) -> act] * depth -> Linear(width, output_size) -> logits

    ``layers`` is the flat ``nn.ModuleList`` ``[Linear, act, Linear, act, ..., Linear]`` of
    ``2 * depth + 1`` modules, with Linear and activation as separate entries, so a pre-training
    routine can cut the network between any two adjacent modules with :meth:`forward_range`.

    Args:
        input_size: features per example (784 for flattened MNIST).
        width: units of every hidden layer.
        depth: number of hidden Linear + activation blocks.
        output_size: classes.
        activation: ``"sin"``, ``"cos"``, ``"relu"`` or ``"tanh"``.

    Inputs: ``x`` of shape ``(batch, input_size)``, or ``(batch, ...)`` that flattens to it.
    Outputs: logits ``(batch, output_size)``.

    Raises:
        DefusalError: for a non-positive size or an unknown activation.
    """

    def __init__(
        self,
        input_size: int = 784,
        width: int = 128,
        depth: int = 30,
        output_size: int = 10,
        activation: str = "sin",
    ) -> None:
        super().__init__()
        for name, value in (
            ("input_size", input_size),
            ("width", width),
            ("depth", depth),
            ("output_size", output_size),
        ):
            if int(value) <= 0:
                raise DefusalError(f"DeepFFN: {name} must be positive, got {value}")
        if activation not in FFN_ACTIVATIONS:
            raise DefusalError(
                f"unknown FFN activation {activation!r}; choose one of {', '.join(FFN_ACTIVATIONS)}"
            )
        self.input_size = int(input_size)
        self.width = int(width)
        self.depth = int(depth)
        self.output_size = int(output_size)
        self.activation = activation

        modules: list[nn.Module] = []
        features = self.input_size
        for _ in range(self.depth):
            modules.append(nn.Linear(features, self.width))
            modules.append(FFN_ACTIVATIONS[activation]())
            features = self.width
        modules.append(nn.Linear(features, self.output_size))
        self.layers = nn.ModuleList(modules)

    @property
    def linears(self) -> list[nn.Linear]:
        """The ``depth + 1`` Linear layers, bottom first."""
        return [module for module in self.layers if isinstance(module, nn.Linear)]

    def forward_range(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Apply ``layers[start:stop]`` to ``x``, the output of ``layers[start - 1]``.

        Args:
            x: ``(batch, features)``, the input of ``layers[start]``.
            start, stop: module indices, ``0 <= start <= stop <= len(layers)``.

        Returns:
            The output of ``layers[stop - 1]`` (``x`` itself when ``start == stop``).
        """
        if not 0 <= start <= stop <= len(self.layers):
            raise DefusalError(
                f"layer range [{start}, {stop}) is outside 0..{len(self.layers)} of this DeepFFN"
            )
        for module in self.layers[start:stop]:
            x = module(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.input_size:
            raise DefusalError(
                f"DeepFFN expects {self.input_size} features per example, got {x.shape[1]}"
            )
        return self.forward_range(x, 0, len(self.layers))
