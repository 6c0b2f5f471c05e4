"""virtdev agent (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("virtdev agent: not implemented yet")
