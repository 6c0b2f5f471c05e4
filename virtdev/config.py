"""Flags and the YAML config file: one set of names for both.

Every option of every `virtdev` command can also be given in the file named by `--config`, under
the flag's own name without the leading dashes (`max-body-bytes: 1048576`). Flags win over the
file, the file wins over the built-in defaults. One file can serve the webhook and the agent (one
ConfigMap in the manifests): a key that belongs to another virtdev command is ignored, a key no
command knows is an error, so a typo never passes silently.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

from virtdev import catalogue


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and the key."""


def csv_list(text: str) -> list[str]:
    """Parse `a,b,c` (spaces allowed); an empty string is an empty list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def capability_list(text: str) -> list[str]:
    """Capabilities as Kubernetes writes them: upper case, without the `CAP_` prefix."""
    return [item.upper().removeprefix("CAP_") for item in csv_list(text)]


def add_config_flag(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file whose keys are this command's flag names without dashes; flags win",
    )


def add_log_format_flag(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as human text or as one JSON object per line (default: text)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe lines logged (default: info: one line per admission decision, "
        "kubelet registration or certificate change; debug adds skipped requests)",
    )


def add_devices_flag(
    parser: argparse._ActionsContainer,
    *,
    help_text: str,
    default: tuple[str, ...] = catalogue.DEFAULT_DEVICES,
) -> None:
    parser.add_argument(
        "--devices",
        type=csv_list,
        default=list(default),
        metavar="LIST",
        help=f"{help_text}; known: {', '.join(catalogue.DEVICES)} (default: {','.join(default)})",
    )


def add_launcher_policy_flags(parser: argparse.ArgumentParser) -> None:
    """Flags describing what a launcher pod is and what it may hold (webhook and offline CLI)."""
    group = parser.add_argument_group(
        "launcher policy",
        "a launcher may hold what Pod Security baseline allows plus what its KubeVirt release "
        "renders (one profile per release range, read from the virt-launcher image tag); "
        "`privileged` is never allowed: /mutate replaces it with device requests",
    )
    add_devices_flag(
        group,
        help_text="devices /mutate adds to a compute container rendered without device requests "
        "(KubeVirt <= v0.6, or privileged)",
    )
    group.add_argument(
        "--launcher-selector",
        default=catalogue.LAUNCHER_SELECTOR,
        metavar="KEY=VALUE",
        help=f"label that marks virt-launcher pods (default: {catalogue.LAUNCHER_SELECTOR})",
    )
    group.add_argument(
        "--compute-container",
        default=catalogue.COMPUTE_CONTAINER,
        metavar="NAME",
        help="name of the launcher container that runs QEMU "
        f"(default: {catalogue.COMPUTE_CONTAINER})",
    )
    group.add_argument(
        "--baseline-version",
        default="latest",
        metavar="latest|v1.N",
        help="the Pod Security baseline version every pod is judged by, as "
        "pod-security.kubernetes.io/enforce-version spells it: latest (default) is the newest "
        "this virtdev knows; pin the version your cluster enforces elsewhere",
    )
    group.add_argument(
        "--kubevirt-controllers",
        type=csv_list,
        default=list(catalogue.KUBEVIRT_CONTROLLERS),
        metavar="LIST",
        help="usernames whose pod creations get their KubeVirt release's exceptions, as the API "
        "server names them in request.userInfo (KubeVirt's virt-controller service account); a "
        "launcher- or hotplug-labelled pod from anyone else is judged by Pod Security baseline "
        f"(default: {','.join(catalogue.KUBEVIRT_CONTROLLERS)})",
    )
    group.add_argument(
        "--kubevirt-version",
        default="auto",
        metavar="auto|vX.Y[.Z]",
        help="the KubeVirt release whose profile (what it renders into launchers) judges every "
        "launcher; auto (default) reads it from each pod's virt-launcher image tag, and a "
        "digest, an unknown tag or a release newer than virtdev knows takes the newest profile",
    )
    group.add_argument(
        "--permitted-capabilities",
        type=capability_list,
        default=[],
        metavar="LIST",
        help="capabilities any launcher container may add beyond Pod Security baseline and "
        "what its KubeVirt release renders (default: none)",
    )
    group.add_argument(
        "--permitted-host-paths",
        type=csv_list,
        default=[],
        metavar="LIST",
        help="hostPath prefixes launchers may mount beyond their release's own, e.g. the "
        "directories of hostDisk volumes (default: none)",
    )
    group.add_argument(
        "--selinux-launcher-types",
        type=csv_list,
        default=[],
        metavar="LIST",
        help="SELinux types KubeVirt is configured to render (its selinuxLauncherType, e.g. "
        "virt_launcher.process), allowed beside baseline's and the release's own (default: none)",
    )
    group.add_argument(
        "--emulation",
        action="store_true",
        help="the cluster runs VMs without KVM: request tun only, never kvm",
    )


#: A config file is a few lines; a larger one is a mistake, refused before it is parsed.
MAX_CONFIG_BYTES = 1024 * 1024


def port(text: str) -> int:
    """A TCP port to listen on, 1-65535 (a type for argparse and the config file)."""
    return _port(text, lowest=1)


def port_or_zero(text: str) -> int:
    """As `port`, and 0 for "any free port" (where the help says so)."""
    return _port(text, lowest=0)


def _port(text: str, *, lowest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between {lowest} and 65535, got {value}")
    return value


def load_config_file(path: str) -> dict[str, Any]:
    """The YAML mapping, read within virtdev.documents' limits; an empty file is empty."""
    # Only when a file is given: every process builds the parser.
    from virtdev.documents import DocumentError, read_yaml_file

    try:
        documents = read_yaml_file(path, MAX_CONFIG_BYTES)
    except DocumentError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    if len(documents) > 1:
        raise ConfigError(f"config file {path}: one YAML document expected, found {len(documents)}")
    data = documents[0] if documents else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must be a mapping of flag names to values")
    return {str(key): value for key, value in data.items()}


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's long options, keyed by the flag name without dashes."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse offers no public iterator over its actions
        for flag in action.option_strings:
            if flag.startswith("--") and flag not in ("--help", "--config"):
                actions[flag[2:]] = action
    return actions


def _convert(key: str, value: Any, action: argparse.Action, path: str) -> Any:
    where = f"config file {path}: key {key!r}"
    if action.nargs == 0:  # a switch such as --emulation
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value if action.const is True else not value
    if isinstance(value, (dict, bool)) or value is None:
        raise ConfigError(f"{where}: expected a scalar or a list, got {value!r}")
    text = ",".join(str(item) for item in value) if isinstance(value, list) else str(value)
    convert = action.type if callable(action.type) else str
    try:
        converted = convert(text)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
        raise ConfigError(f"{where}: {error}") from error
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {converted!r} is not one of {choices}")
    return converted


def apply_config(
    parser: argparse.ArgumentParser,
    values: Mapping[str, Any],
    *,
    path: str,
    other_keys: Iterable[str] = (),
) -> None:
    """Make the file's values the parser's defaults, so flags given on the command line win."""
    actions = option_actions(parser)
    ignored = set(other_keys)
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        action = actions.get(key)
        if action is None:
            if key in ignored:
                continue
            raise ConfigError(
                f"config file {path}: unknown key {key!r}; keys are flag names without dashes, "
                f"e.g. {', '.join(sorted(actions)[:4])}"
            )
        defaults[action.dest] = _convert(key, value, action, path)
    parser.set_defaults(**defaults)
