"""The layering of docs/architecture.md, checked on the source.

The layout block of docs/architecture.md lists every module in dependency order: a module may
import only modules listed above it (a package's facade sits after its last module). The test
reads that order from the document, so the document and the tree cannot drift apart.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "automl_nn"
OPTUNA_LINE = "nothing above this line imports optuna"


def documented_order() -> tuple[list[str], int]:
    """Modules in the documented order (dotted, under automl_nn) and the index of the optuna line."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"## Layout.*?```\n(.*?)```", text, re.S)
    assert block is not None, "docs/architecture.md has no ## Layout code block"
    order: list[str] = []
    package: str | None = None
    optuna_at = -1
    for line in block.group(1).splitlines()[1:]:  # the first line is `automl_nn/`
        if OPTUNA_LINE in line:
            optuna_at = len(order)
            continue
        match = re.match(r"( *)(\w+)(\.py|/)", line)
        if match is None:
            continue  # a description continued on the next line
        indent, name, kind = len(match.group(1)), match.group(2), match.group(3)
        if kind == "/":
            if package is not None:
                order.append(package)
            package = name
        elif indent > 2 and package is not None:
            order.append(f"{package}.{name}")
        else:
            if package is not None:
                order.append(package)  # the facade comes after the package's modules
                package = None
            order.append(name)
    if package is not None:
        order.append(package)
    return order, optuna_at


def source_modules() -> set[str]:
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        facade = parts[-1] == "__init__" and len(parts) > 1
        modules.add(".".join(parts[:-1] if facade else parts))
    return modules


def _path(module: str) -> Path:
    target = PACKAGE.joinpath(*module.split("."))
    return target / "__init__.py" if target.is_dir() else target.with_suffix(".py")


def imports(module: str, known: set[str]) -> set[str]:
    """The automl_nn modules `module` imports anywhere in its file (function-level imports too)."""
    tree = ast.parse(_path(module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]  # a submodule, or a name in one
        else:
            continue
        for name in names:
            dotted = name.removeprefix("automl_nn.") if name.startswith("automl_nn.") else ""
            while dotted and dotted not in known:
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != module:
                found.add(dotted)
    return found


def third_party(module: str) -> set[str]:
    tree = ast.parse(_path(module).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


ORDER, OPTUNA_AT = documented_order()


def test_the_document_lists_every_module_once() -> None:
    assert len(ORDER) == len(set(ORDER)), "a module is listed twice in docs/architecture.md"
    listed, present = set(ORDER), source_modules()
    assert present - listed == set(), f"missing from docs/architecture.md: {sorted(present - listed)}"
    assert listed - present == set(), f"in docs/architecture.md, not in the tree: {sorted(listed - present)}"
    assert OPTUNA_AT > 0


@pytest.mark.parametrize("module", ORDER)
def test_every_import_points_up_the_documented_order(module: str) -> None:
    known = set(ORDER)
    position = {name: i for i, name in enumerate(ORDER)}
    wrong = sorted(m for m in imports(module, known) if position[m] >= position[module]
                   and not m.startswith(f"{module}."))
    assert wrong == [], f"automl_nn.{module} imports {wrong}, listed below it in docs/architecture.md"


@pytest.mark.parametrize("module", ORDER[:OPTUNA_AT])
def test_nothing_above_the_optuna_line_imports_optuna(module: str) -> None:
    assert "optuna" not in third_party(module), f"automl_nn.{module} imports optuna"


# ---- torch stays out of what does not train ----------------------------------------------------

TORCH_FREE = ("errors", "registry", "vocab", "spec", "config", "data", "storage", "study", "space",
              "pruning", "results.summary", "results.decide", "results.report", "results.dashboard",
              "results.plot")


def test_torch_free_modules_import_no_torch() -> None:
    code = ("import importlib, sys\n"
            f"for name in {TORCH_FREE!r}: importlib.import_module('automl_nn.' + name)\n"
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_help_does_not_import_torch_or_optuna() -> None:
    code = ("import sys; from automl_nn import cli; "
            "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_every_torch_factory_registers_under_the_vocabulary_names() -> None:
    from automl_nn import nn, vocab

    pairs = [(vocab.FAMILIES, nn.BUILDERS), (vocab.ACTIVATIONS, nn.ACTIVATION_MODULES),
             (vocab.INITIALIZERS, nn.INIT_FILLS), (vocab.LOSSES, nn.LOSS_FUNCTIONS),
             (vocab.OPTIMIZERS, nn.OPTIMIZER_FACTORIES), (vocab.SCHEDULES, nn.SCHEDULE_FACTORIES)]
    for names, factories in pairs:
        assert names.names() == factories.names(), names.kind
        assert all(alias in factories for alias in names._aliases), names.kind
