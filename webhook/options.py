"""The webhook's flags' defaults and the modes they switch between, each written once.

A mode is a `Literal` whose tuple of values is derived from it (`typing.get_args`), so argparse's
`choices`, the settings' checks and mypy all read the same words. Light on purpose (typing only):
building the `virtdev` parser, which every command and the agent on every node does, imports
this and nothing of the rules or the server, which take their defaults from here too.
"""

from __future__ import annotations

from typing import Literal, get_args

#: What /validate does with a launcher pod its rules refuse (webhook.rules.enforcement).
Enforcement = Literal["deny", "warn"]
ENFORCEMENTS: tuple[Enforcement, ...] = get_args(Enforcement)
DEFAULT_ENFORCEMENT: Enforcement = "deny"

#: What /mutate does when no schedulable node has kvm (webhook.nodes.feasibility).
NoKvmPolicy = Literal["warn", "emulate", "deny"]
NO_KVM_POLICIES: tuple[NoKvmPolicy, ...] = get_args(NoKvmPolicy)
DEFAULT_NO_KVM_POLICY: NoKvmPolicy = "warn"

#: Larger request bodies are refused with 413: an UPDATE review carries two objects of the API
#: server's maximum request size (webhook.serving.endpoint).
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
#: Bytes of large bodies (over 64 KiB) held at once across all requests
#: (webhook.serving.endpoint).
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024
#: Connections open at once on the HTTPS port, TLS handshakes included
#: (webhook.serving.connections).
DEFAULT_MAX_CONNECTIONS = 1000
#: Well under the API server's 30 s limit for a webhook call, far over what it needs: it sends a
#: whole review (≤ 6 MiB) at once, in milliseconds on a cluster network.
DEFAULT_HEAD_SECONDS = 10.0
DEFAULT_BODY_SECONDS = 10.0

#: Objects per list request: client-go's pager default (webhook.nodes.paging), and kubectl's
#: --chunk-size (`virtdev audit`, `virtdev capacity`).
DEFAULT_PAGE_SIZE = 500

#: What `virtdev mutate`, `validate` and `audit` exit with: every pod allowed, any denied, bad
#: input (a usage error too, as argparse exits).
ALLOWED, DENIED, BAD_INPUT = 0, 1, 2
