"""Registry lookup with an error that names the config key and lists what is registered."""
from typing import Any

from fvcore.common.registry import Registry

from ..config import ConfigError


def lookup(registry: Registry, name: str, cfg_key: str) -> Any:
    """``registry.get(name)``, or a ConfigError naming ``cfg_key``, the value and the choices."""
    if name not in registry:
        choices = ", ".join(sorted(k for k, _ in registry))
        raise ConfigError(f"{cfg_key}: {name!r} is not registered in {registry._name}; "
                          f"registered: {choices}")
    return registry.get(name)
