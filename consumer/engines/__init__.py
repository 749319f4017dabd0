"""Engine registry: name -> module with `create_engine(settings)`. Modules import lazily, so
an engine's heavy dependencies are loaded only when it is the one configured."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

from consumer.errors import ConfigurationError

if TYPE_CHECKING:
    from consumer.engine import Engine
    from consumer.settings import WorkerSettings

ENGINES = {
    "espeak": "consumer.engines.espeak",
    "cosyvoice": "consumer.engines.cosyvoice",
    "null": "consumer.engines.null",
}


def create_engine(settings: WorkerSettings) -> Engine:
    module_name = ENGINES.get(settings.engine)
    if module_name is None:
        raise ConfigurationError(
            f"unknown engine {settings.engine!r}; choose one of {', '.join(sorted(ENGINES))}"
        )
    module: Any = importlib.import_module(module_name)
    return cast("Engine", module.create_engine(settings))
