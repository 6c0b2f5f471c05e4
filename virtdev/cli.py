"""The `virtdev` command: one entry point, one subcommand per job.

Subcommands are described by light modules (argparse and the catalogue only); the heavy parts
(FastAPI, grpc, the Kubernetes client) are imported only by the command that runs, so that the
agent on every node does not pay for the webhook's libraries and `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from virtdev import __version__
from virtdev.config import ConfigError, apply_config, load_config_file, option_actions


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    summary: str


COMMANDS: tuple[Command, ...] = (
    Command("webhook", "webhook.cli", "serve /mutate and /validate over HTTPS (the Deployment)"),
    Command("agent", "agent.cli", "serve /dev/kvm and /dev/net/tun to the kubelet (the DaemonSet)"),
    Command("certs", "certs.cli", "generate, inspect and rotate the webhook's TLS material"),
    Command("mutate", "webhook.offline_mutate", "show what /mutate does to a Pod or review file"),
    Command("validate", "webhook.offline_validate", "show what /validate says of a Pod or review"),
    Command("capacity", "webhook.capacity_cli", "per node: can it take a VM, and if not, why"),
)

DESCRIPTION = """\
virtdev lets KubeVirt run virt-launcher pods without privileges: an agent on every node
advertises /dev/kvm and /dev/net/tun to the kubelet as extended resources, and an admission
webhook makes launcher pods request them instead of running privileged.

Start here:
  virtdev webhook --host 127.0.0.1        serve locally with throwaway certificates
  virtdev mutate tests/fixtures/v1-launcher-2018-privileged.json
                                          see the patch /mutate would return
  virtdev agent --help                    the node agent's flags
"""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="virtdev",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"virtdev {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    by_name: dict[str, argparse.ArgumentParser] = {}
    for command in COMMANDS:
        module = importlib.import_module(command.module)
        sub = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=(module.__doc__ or command.summary).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        by_name[command.name] = sub
    return parser, by_name


def _leaf_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """Descend into nested subcommands (`certs generate`) to the parser that owns the flags."""
    leaf = parser
    while True:
        actions = [a for a in leaf._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            return leaf
        chosen = getattr(args, actions[0].dest, None)
        if chosen is None:
            return leaf
        leaf = actions[0].choices[chosen]


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser, by_name = build_parser()
    args = parser.parse_args(argv)
    config_path = getattr(args, "config", None)
    if config_path:
        leaf = _leaf_parser(by_name[args.command], args)
        every_key: set[str] = set()
        for sub in by_name.values():
            every_key |= _all_keys(sub)
        try:
            apply_config(
                leaf, load_config_file(config_path), path=config_path, other_keys=every_key
            )
        except ConfigError as error:
            leaf.error(str(error))
        args = parser.parse_args(argv)
    return args


def _all_keys(parser: argparse.ArgumentParser) -> set[str]:
    keys = set(option_actions(parser))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                keys |= _all_keys(sub)
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
