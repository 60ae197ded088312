"""defusal: detect and defuse exponential explosion in learned dynamical systems."""

__version__ = "0.1.0"
