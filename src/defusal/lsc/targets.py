"""Target gains per edge type: a number, ``"unbalanced"`` or a dict."""

from __future__ import annotations

import math
from collections.abc import Mapping

from defusal.errors import DefusalError
from defusal.jacobian import EDGES

DECODER_TARGET = 1.0


def _check_value(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DefusalError(
            f"target {name}={value!r} is not a number; use a positive number, 'unbalanced' "
            "or a dict of numbers per edge type"
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise DefusalError(f"target {name}={value!r} must be positive and finite, e.g. 1 or 0.5")
    return number


def resolve_targets(target, *, num_layers: int, time_steps: int | None = None) -> dict[str, float]:
    """Return the target gain of every edge type.

    Args:
        target: a positive number (time, depth and encoder edges; the decoder gets 1), the
            string ``"unbalanced"``, or a dict ``{edge type: number}`` with at least ``time``
            and ``depth``; a missing ``encoder`` takes the depth target, a missing ``decoder``
            takes 1.
        num_layers: ``L``.
        time_steps: ``T``, needed for ``"unbalanced"``: time ``T / (T + L)``, depth and encoder
            ``L / (T + L)``, so that time and depth targets sum to 1 and long time lags keep a
            gain near 1.

    Returns:
        ``{"time": ..., "depth": ..., "encoder": ..., "decoder": ...}``.

    Raises:
        DefusalError: for a non-positive, non-finite or unknown target.
    """
    if isinstance(target, Mapping):
        unknown = set(target) - set(EDGES)
        if unknown:
            raise DefusalError(
                f"unknown edge types {sorted(unknown)} in the target; use {', '.join(EDGES)}"
            )
        missing = {"time", "depth"} - set(target)
        if missing:
            raise DefusalError(f"the target dict needs {sorted(missing)}; give a number for each")
        values = {edge: _check_value(edge, value) for edge, value in target.items()}
        values.setdefault("encoder", values["depth"])
        values.setdefault("decoder", DECODER_TARGET)
        return {edge: values[edge] for edge in EDGES}
    if isinstance(target, str) and target.strip().lower() == "unbalanced":
        if not time_steps or time_steps <= 0:
            raise DefusalError(
                "the 'unbalanced' target needs the sequence length T; pass time_steps"
            )
        total = time_steps + num_layers
        depth = num_layers / total
        return {
            "time": time_steps / total,
            "depth": depth,
            "encoder": depth,
            "decoder": DECODER_TARGET,
        }
    value = _check_value("value", target)
    return {"time": value, "depth": value, "encoder": value, "decoder": DECODER_TARGET}
