"""e2lmc: run lm-eval benchmarks over early-training checkpoints and score their curves."""

__version__ = "0.1.0"
