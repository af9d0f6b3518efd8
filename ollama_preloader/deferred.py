"""A module imported for real at its first use: asyncio, until `run` has spawned `ollama serve`.

pydantic-settings and structlog import asyncio at their top but call it only later, and `run`
spawns `ollama serve` before it starts its event loop (launch.py). asyncio's own modules cost
~8 ms that would otherwise come before the spawn (what they import besides, ssl, socket,
logging, the settings' libraries import anyway; docs/benchmarks.md).
`defer` puts a stand-in into sys.modules: every `import asyncio` meanwhile binds the stand-in,
and the first attribute looked up on it (or `load`) runs the real module in that same object,
as importlib.util.LazyLoader does. Unlike LazyLoader, an `import` statement alone does not
load it (in Python 3.11, finding a LazyLoader module in sys.modules reads its `__spec__`, and
that loads it). There is only ever one asyncio module object.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        # The import system probes dunders on any module it finds; `__path__` means a
        # submodule is wanted, which needs the package itself.
        if name.startswith("__") and name.endswith("__") and name != "__path__":
            raise AttributeError(name)
        return getattr(load(self.__name__), name)


def defer(name: str) -> None:
    """Let `name` be imported without running it (nothing happens if it is imported already)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    stand_in = _StandIn(name)
    stand_in.__spec__ = spec
    sys.modules[name] = stand_in


def load(name: str) -> types.ModuleType:
    """The real module `name`, run now in its stand-in if it was deferred."""
    found = sys.modules.get(name)
    if not isinstance(found, _StandIn):
        return importlib.import_module(name)
    module: types.ModuleType = found
    spec = module.__spec__
    assert spec is not None
    assert spec.loader is not None
    # A plain module from here on: its own lookups while it runs must not come back here.
    module.__class__ = types.ModuleType
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    module.__cached__ = spec.cached  # type: ignore[attr-defined]
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = name
    else:
        module.__package__ = spec.parent
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
