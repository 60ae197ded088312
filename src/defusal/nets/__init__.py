"""The network zoo: recurrent cells, stacks of them, deep feed-forward nets and their set-up.

Every recurrent layer is a :class:`Cell` with a flat state (``[h]``, ``[h; c]``, ``[v; a]`` or
``[Re x; Im x]``), stacked in a :class:`RecurrentStack`. :func:`build_network` builds a stack by
name, :func:`initialize_` applies a named initialization, and :func:`to_torch` /
:func:`from_torch` convert LSTM, GRU and simple RNN stacks to and from the fused torch modules.
"""

from defusal.nets.alif import ALIFCell, spike
from defusal.nets.base import Cell, RecurrentStack
from defusal.nets.build import NETWORKS, build_network
from defusal.nets.cells import GRUCell, LSTMCell, SimpleRNNCell
from defusal.nets.convert import FusedRecurrentNetwork, from_torch, stack_from_torch, to_torch
from defusal.nets.ffn import DeepFFN
from defusal.nets.init import INIT_SCHEMES, initialize_
from defusal.nets.lru import LRUCell, LRUStack, ResidualLRUCell, lru_parallel_scan

__all__ = [
    "ALIFCell",
    "Cell",
    "DeepFFN",
    "FusedRecurrentNetwork",
    "GRUCell",
    "INIT_SCHEMES",
    "LRUCell",
    "LRUStack",
    "LSTMCell",
    "NETWORKS",
    "RecurrentStack",
    "ResidualLRUCell",
    "SimpleRNNCell",
    "build_network",
    "from_torch",
    "initialize_",
    "lru_parallel_scan",
    "spike",
    "stack_from_torch",
    "to_torch",
]
