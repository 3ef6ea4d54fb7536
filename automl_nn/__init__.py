"""automl-nn: which network, and what does it cost? Architecture and hyperparameter search on Optuna."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `automl_nn.load_exported` without importing torch when only the CLI's --help is needed.
    if name == "load_exported":
        from automl_nn.results.export import load_exported

        return load_exported
    raise AttributeError(f"module 'automl_nn' has no attribute {name!r}")
