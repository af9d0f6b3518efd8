"""`python3 -m fake_ollama.seed NAME...`: make models present in a store without a pull."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .catalog import Catalog, default_spec
from .envconfig import default_models_dir
from .names import parse_name
from .store import Store


def seed(models_dir: Path, names: list[str], catalog_path: str = "") -> list[str]:
    """Install each name (catalog entry, else a default completion model); returns installed."""
    store = Store(models_dir)
    store.init()
    catalog = Catalog(catalog_path)
    installed = []
    for n in names:
        name = parse_name(n)
        if not name.is_valid():
            raise ValueError(f"invalid model name: {n!r}")
        if store.install(name, catalog.get(n) or default_spec(n)):
            installed.append(name.display_shortest())
    return installed


def main(argv: list[str] | None = None) -> int:
    """CLI wrapper around seed()."""
    p = argparse.ArgumentParser(prog="python3 -m fake_ollama.seed", description=__doc__)
    p.add_argument("names", nargs="+")
    p.add_argument("--models", default=str(default_models_dir()), help="OLLAMA_MODELS dir")
    p.add_argument("--catalog", default=os.environ.get("FAKE_OLLAMA_CATALOG", ""))
    a = p.parse_args(argv)
    for n in seed(Path(a.models), a.names, a.catalog):
        print(f"seeded {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
