"""automl-nn: which network, and what does it cost? Architecture and hyperparameter search on Optuna."""

__version__ = "0.1.0"
