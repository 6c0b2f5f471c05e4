"""One way to reach the cluster, for every command: where the configuration comes from, loaded
into a `kubernetes.client.Configuration`, with errors that name the file in one line.

Commands run by people (`virtdev capacity`, `audit`, `certs ensure`) look where kubectl looks,
in kubectl's order (client-go `tools/clientcmd/loader.go`, `ClientConfigLoadingRules`; the
in-cluster fallback is `merged_client_builder.go`'s, used when no file gives a configuration):

1. `--kubeconfig FILE` (a missing file is an error);
2. `$KUBECONFIG`, a `:`-separated list merged in order (missing files are skipped);
   when it is set, ~/.kube/config is not read;
3. `~/.kube/config`, when it exists;
4. the in-cluster service account, when running in a pod (`KUBERNETES_SERVICE_HOST`);

and `--context` picks a context other than the current one. The webhook, a server, reads only
what it is told: `--kubeconfig`, else the in-cluster service account, else no cluster at all, so
that a webhook run on a laptop never acts on a `~/.kube/config` it was not given.

Files are parsed here first, within `virtdev.documents`' limits, so that a missing, unreadable
or malformed kubeconfig is one line naming it rather than the client's traceback; the client
then loads them read-only (`persist_config=False`: a token refresh never rewrites the file).
Light at import (the parser of every command imports `add_flags`): the client, orjson and yaml
are imported by the functions that use them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: A kubeconfig with certificates inlined is some kilobytes; anything this large is a mistake.
MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024


class KubeConfigError(Exception):
    """No usable configuration; the message names the flag or file and what is wrong."""


@dataclass(frozen=True)
class Files:
    """Kubeconfig files to merge, and which setting named them (for messages)."""

    setting: str  # "--kubeconfig", "$KUBECONFIG" or "~/.kube/config"
    paths: tuple[str, ...]


@dataclass(frozen=True)
class InCluster:
    directory: str = SERVICE_ACCOUNT_DIR


Source = Files | InCluster


@dataclass(frozen=True)
class Loaded:
    configuration: Any  # kubernetes.client.Configuration (the client is untyped)
    #: Where it came from, for a log line: "kubeconfig /x (context y)", "in-cluster ...".
    description: str


def cli_source(
    kubeconfig: str | None,
    *,
    environ: Mapping[str, str] = os.environ,
    home: str | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> Source:
    """Where a command run by a person reads the cluster from, in kubectl's order."""
    if kubeconfig:
        return Files("--kubeconfig", (kubeconfig,))
    listed = [path for path in environ.get("KUBECONFIG", "").split(os.pathsep) if path]
    if listed:
        existing = tuple(path for path in listed if os.path.exists(path))
        if existing:
            return Files("$KUBECONFIG", existing)
        if not environ.get("KUBERNETES_SERVICE_HOST"):
            raise KubeConfigError(
                f"$KUBECONFIG: none of its files exists ({', '.join(listed)}) "
                "(name one with --kubeconfig, or fix $KUBECONFIG)"
            )
        return InCluster(service_account_dir)
    default = Path(home if home is not None else Path.home()) / ".kube" / "config"
    if default.exists():
        return Files("~/.kube/config", (str(default),))
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return InCluster(service_account_dir)
    raise KubeConfigError(
        "no Kubernetes configuration: no --kubeconfig, $KUBECONFIG or ~/.kube/config, and not "
        "running in a pod (give --kubeconfig FILE)"
    )


def webhook_source(
    kubeconfig: str | None,
    *,
    environ: Mapping[str, str] = os.environ,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> Source | None:
    """Where the webhook reads the cluster from: the flag, the pod's service account, or none."""
    if kubeconfig:
        return Files("--kubeconfig", (kubeconfig,))
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return InCluster(service_account_dir)
    return None


def describe(source: Source, context: str | None = None) -> str:
    if isinstance(source, InCluster):
        return "in-cluster service account"
    text = f"kubeconfig {os.pathsep.join(source.paths)}"
    return f"{text} (context {context})" if context else text


def load(
    source: Source, *, context: str | None = None, environ: Mapping[str, str] = os.environ
) -> Loaded:
    """The client configuration from `source`; KubeConfigError (one line) when unusable."""
    from kubernetes import client
    from kubernetes.config import ConfigException
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = client.Configuration()
    if isinstance(source, InCluster):
        if context:
            raise KubeConfigError(
                f"--context {context}: running in-cluster, there is no kubeconfig to pick a "
                "context from (give --kubeconfig too)"
            )
        directory = Path(source.directory)
        try:
            loader: Any = InClusterConfigLoader  # the client is untyped
            loader(
                token_filename=str(directory / "token"),
                cert_filename=str(directory / "ca.crt"),
                environ=dict(environ),
            ).load_and_set(configuration)
        except ConfigException as error:
            raise KubeConfigError(f"in-cluster service account: {_line(error)}") from None
        return Loaded(configuration, describe(source))
    contexts: list[str] = []
    current: str | None = None
    for path in source.paths:
        document = _check_file(source.setting, path)
        for entry in document.get("contexts") or ():
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                contexts.append(entry["name"])
        # kubectl: the first file to set current-context wins; the Python client would take
        # the last one, so it is told.
        if current is None and isinstance(document.get("current-context"), str):
            current = document["current-context"] or None
    context = context or current
    where = f"{source.setting}: {os.pathsep.join(source.paths)}"
    if context and context not in contexts:
        raise KubeConfigError(
            f"{where}: no context {context!r} (contexts: {', '.join(contexts) or 'none'})"
        )
    from kubernetes.config import kube_config

    load_kube_config: Any = kube_config.load_kube_config  # the client is untyped
    try:
        load_kube_config(
            config_file=os.pathsep.join(source.paths),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, ValueError, TypeError, KeyError, AttributeError, OSError) as error:
        # The client's messages are about the merged configuration; name where it came from.
        raise KubeConfigError(f"{where}: {_line(error)}") from None
    return Loaded(configuration, describe(source, context))


def _check_file(setting: str, path: str) -> dict[str, Any]:
    """Readable, within limits, and a YAML mapping: else one line naming the file."""
    from virtdev.documents import DocumentError, read_yaml_file

    where = f"{setting}: {path}" if setting != "~/.kube/config" else path
    try:
        documents = read_yaml_file(path, MAX_KUBECONFIG_BYTES)
    except DocumentError as error:
        raise KubeConfigError(f"{where}: {error}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise KubeConfigError(f"{where}: not a kubeconfig (expected one YAML mapping)")
    return documents[0]


def _line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text.removeprefix("Invalid kube-config file. ")


def api_client(loaded: Loaded) -> Any:
    """A `kubernetes.client.ApiClient` for the configuration (close it, or use `with`)."""
    from kubernetes import client

    return client.ApiClient(loaded.configuration)


def cli_client(
    kubeconfig: str | None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    home: str | None = None,
) -> Any:
    """The ApiClient of a command run by a person (`capacity`, `audit`, `certs ensure`)."""
    source = cli_source(kubeconfig, environ=environ, home=home)
    return api_client(load(source, context=context, environ=environ))


def add_flags(parser: Any) -> None:
    """`--kubeconfig` and `--context`, as every command run by a person spells them."""
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config, else the in-cluster "
        "service account, as kubectl)",
    )
    parser.add_argument(
        "--context", metavar="NAME", help="the kubeconfig context to use (default: current)"
    )
