"""The `aisbatchfs` command."""

from __future__ import annotations

import argparse
import sys

from aisbatchfs import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aisbatchfs",
        description="Read AIStore through a plain filesystem, at GetBatch speed.",
    )
    p.add_argument("--version", action="version", version=f"aisbatchfs {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
