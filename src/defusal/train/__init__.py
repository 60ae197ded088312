"""Training of classifiers and language models with cross-entropy.

:func:`train` runs the epochs and writes, after each, an atomic checkpoint, ``history.csv``,
``grad_norms.csv`` and ``result.json`` to the run folder. Classification reports the accuracy
and a language model the perplexity ``exp(mean token cross-entropy)``. A run can be resumed
from its checkpoint and then ends exactly as an uninterrupted run with the same seed would.
"""

from defusal.train.config import TrainConfig
from defusal.train.evaluate import Evaluation, classification_logits, evaluate, perplexity
from defusal.train.gradients import clip_gradients, group_norms, layer_name, parameter_groups
from defusal.train.loop import TrainResult, build_optimizer, epoch_seed, evaluate_splits, train

__all__ = [
    "Evaluation",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "classification_logits",
    "clip_gradients",
    "epoch_seed",
    "evaluate",
    "evaluate_splits",
    "group_norms",
    "layer_name",
    "parameter_groups",
    "perplexity",
    "train",
]
