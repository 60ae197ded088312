"""LSC pre-training: measure local gains and drive them to the Local Stability Condition.

The Local Stability Condition asks every local Jacobian ``M_k`` of a deep network (time, depth,
encoder and decoder edges) to have the same expected gain ``E rho(M_k) = rho*``, with
``rho* = 1`` or ``0.5``, or time and depth targets that sum to 1.
"""

from defusal.lsc.checkpoint import load_checkpoint, save_checkpoint
from defusal.lsc.measure import measure
from defusal.lsc.pretrain import pretrain_
from defusal.lsc.report import LSCReport, format_table
from defusal.lsc.targets import resolve_targets

__all__ = [
    "LSCReport",
    "format_table",
    "load_checkpoint",
    "measure",
    "pretrain_",
    "resolve_targets",
    "save_checkpoint",
]
