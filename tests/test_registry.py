import pytest

from automl_nn.errors import ConfigError
from automl_nn.registry import Registry


def test_lookup_by_name_and_alias() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("accuracy", 1, aliases=("acc",))
    assert reg.get("accuracy") == 1
    assert reg.get("acc") == 1
    assert reg.canonical("acc") == "accuracy"
    assert reg.names() == ["accuracy"]


def test_duplicate_name_or_alias_raises() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1, aliases=("b",))
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("c", 3, aliases=("b",))


def test_unknown_name_lists_valid_ones_and_suggests() -> None:
    reg: Registry[int] = Registry("activation")
    for name in ("relu", "selu", "tanh"):
        reg.add(name, 0)
    with pytest.raises(ConfigError) as info:
        reg.get("rellu", "space.activation")
    message = str(info.value)
    assert 'Did you mean "relu"' in message
    assert "relu, selu, tanh" in message
    assert message.startswith("space.activation:")
