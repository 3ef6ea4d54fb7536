"""The layering rules of docs/architecture.md, checked on the source."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "automl_nn"
# Modules below `space`: they never import optuna, so a Candidate rebuilds anywhere without a study.
NO_OPTUNA = ("errors", "registry", "spec", "blocks", "losses", "optim", "arrays", "synthetic", "files",
             "vision", "prepare", "data", "model", "metrics",
             "train", "config", "accel")


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_below_space_imports_optuna() -> None:
    for module in NO_OPTUNA:
        assert "optuna" not in _imports(module), f"automl_nn/{module}.py imports optuna"


def test_help_does_not_import_torch_or_optuna() -> None:
    code = ("import sys; from automl_nn import cli; "
            "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
