"""The arguments `virtdev mutate` and `virtdev validate` share.

Kept apart from `webhook.offline` so that building the `virtdev` parser (which every command,
the agent on every node included, does) does not import the rules, orjson or jsonpatch.
"""

from __future__ import annotations

import argparse

from virtdev.config import add_config_flag, add_launcher_policy_flags


def configure_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        help="Pods or AdmissionReviews (YAML or JSON; one object, a multi-document stream or a "
        "List), or - for standard input",
    )
    add_config_flag(parser)
    add_launcher_policy_flags(parser)
