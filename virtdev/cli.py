"""The `virtdev` command: one entry point, one subcommand per job.

Subcommands are described by light modules (argparse and the catalogue only); the heavy parts
(FastAPI, grpc, the Kubernetes client) are imported only by the command that runs, so that the
agent on every node does not pay for the webhook's libraries and `--help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from virtdev import __version__
from virtdev.config import ConfigError, apply_config, load_config_file, option_actions


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    summary: str
    #: The module's function that adds the command's flags; its docstring, when it is not the
    #: module's only `configure`, is the command's `--help` description.
    configure: str = "configure"


#: Each command's module is named, not imported: `virtdev` is the bottom layer, which agent,
#: certs and webhook build on, so importing their CLIs here would point an import upward (the
#: layers contract of pyproject.toml, run by `lint-imports`). The alternatives cost more: a
#: package of its own above all four only to hold this table, or entry points, whose lookup reads
#: every installed distribution's metadata on each start. What keeps `--help` light is not the
#: strings but what the named modules import: argparse and virtdev only, the rest in `run`.
COMMANDS: tuple[Command, ...] = (
    Command(
        "webhook",
        "webhook.cli",
        "serve /mutate, /validate and /guard over HTTPS (the Deployment)",
        "configure_webhook",
    ),
    Command("agent", "agent.cli", "serve /dev/kvm and /dev/net/tun to the kubelet (the DaemonSet)"),
    Command("certs", "certs.cli", "generate, inspect and rotate the webhook's TLS material"),
    Command(
        "mutate",
        "webhook.cli",
        "show what /mutate does to a Pod or review file",
        "configure_mutate",
    ),
    Command(
        "validate",
        "webhook.cli",
        "show what /validate says of a Pod or review",
        "configure_validate",
    ),
    Command(
        "capacity",
        "webhook.cli",
        "per node: can it take a VM, and if not, why",
        "configure_capacity",
    ),
    Command(
        "audit",
        "webhook.cli",
        "what /validate would say of the launchers running now",
        "configure_audit",
    ),
)

DESCRIPTION = """\
virtdev lets KubeVirt run virt-launcher pods without privileges: an agent on every node
advertises /dev/kvm and /dev/net/tun to the kubelet as extended resources, and an admission
webhook makes launcher pods request them instead of running privileged.

Start here:
  virtdev webhook --host 127.0.0.1        serve locally with throwaway certificates
  virtdev mutate tests/fixtures/v1-launcher-2018-privileged.json
                                          see the patch /mutate would return
  virtdev audit -A                        what /validate would say of running launchers
  virtdev agent --help                    the node agent's flags
"""


#: Exit codes shared by every command: 2 for bad flags, as argparse; 141 (128 + SIGPIPE, what a
#: shell reports for `cat big | head -1`) when the reader of standard output went away.
BAD_FLAGS = 2
CLOSED_PIPE = 141


class Parser(argparse.ArgumentParser):
    """argparse, with every flag spelled out and usage errors in one line.

    Abbreviations are off (`--tls-cer` is not `--tls-cert`): a flag that only matches because
    a longer one exists today would change meaning when another is added. An error is
    `virtdev COMMAND: --FLAG: what is wrong (see virtdev COMMAND --help)`, exit 2.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        problem = message.removeprefix("argument ")
        self.exit(BAD_FLAGS, f"{self.prog}: {problem} (see {self.prog} --help)\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = Parser(
        prog=program_name(),
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"virtdev {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    by_name: dict[str, argparse.ArgumentParser] = {}
    for command in COMMANDS:
        module = importlib.import_module(command.module)
        configure = getattr(module, command.configure)
        described = configure if command.configure != "configure" else module
        sub = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=inspect.cleandoc(described.__doc__ or command.summary),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        configure(sub)
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


def _parse(
    parser: argparse.ArgumentParser,
    by_name: dict[str, argparse.ArgumentParser],
    argv: Sequence[str] | None,
) -> argparse.Namespace:
    """parse_args, with an unknown flag reported by the command it was given to."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        leaf = _leaf_parser(by_name[args.command], args)
        first = extra[0]
        leaf.error(f"{first}: no such flag" if first.startswith("-") else f"unexpected {first!r}")
    return args


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser, by_name = build_parser()
    args = _parse(parser, by_name, argv)
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
        args = _parse(parser, by_name, argv)
    return args


def _all_keys(parser: argparse.ArgumentParser) -> set[str]:
    keys = set(option_actions(parser))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                keys |= _all_keys(sub)
    return keys


def program_name(argv0: str | None = None) -> str:
    """`virtdev`, or `kubectl virtdev` when run as the kubectl plugin `kubectl-virtdev`."""
    name = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    return "kubectl virtdev" if name == "kubectl-virtdev" else "virtdev"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        code = run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        # `virtdev mutate big.yaml | head -1`: the reader has what it wanted. Nothing more can
        # be written, and Python's own flush at exit would complain: point stdout at nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
