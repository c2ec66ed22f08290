"""The `mrdabak` console script: the guide's commands, each calling the same core as the assets.

Each sub-command lives in its own module of this package and registers itself with `register`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules of this package that define sub-commands (each has `register(subparsers)`).
COMMAND_MODULES = ("db", "dataset", "finetune_hf", "openai_jobs", "predict", "chat")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrdabak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
