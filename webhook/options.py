"""The modes the webhook's flags switch between, each written once as a `Literal`.

The tuple of values is derived from the type (`typing.get_args`), so argparse's `choices`, the
settings' checks and mypy all read the same words. Light on purpose (typing only): building the
`virtdev` parser, which every command and the agent on every node does, imports this and
nothing of the rules or the server.
"""

from __future__ import annotations

from typing import Literal, get_args

#: What /validate does with a launcher pod its rules refuse (webhook.enforcement).
Enforcement = Literal["deny", "warn"]
ENFORCEMENTS: tuple[Enforcement, ...] = get_args(Enforcement)
DEFAULT_ENFORCEMENT: Enforcement = "deny"

#: What /mutate does when no schedulable node has kvm (webhook.feasibility).
NoKvmPolicy = Literal["warn", "emulate", "deny"]
NO_KVM_POLICIES: tuple[NoKvmPolicy, ...] = get_args(NoKvmPolicy)
DEFAULT_NO_KVM_POLICY: NoKvmPolicy = "warn"
