"""`virtdev.kube`: where every command reads the cluster from, and its one-line errors.

The order is kubectl's; each case is checked by where the loaded configuration points, and the
commands are run against the API stand-in through the real `kubernetes` client.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kube_standin import StandIn, node_object, write_kubeconfig
from tests.support import run_webhook
from virtdev import kube
from virtdev.cli import main


def kubeconfig_for(path: Path, **servers: str) -> str:
    """A kubeconfig with one context per server (named as the keyword), the first current."""
    names = list(servers)
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in names],
        "current-context": names[0],
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    return {
        "flag": kubeconfig_for(tmp_path / "flag", flag="http://flag.example:1"),
        "env": kubeconfig_for(tmp_path / "env", env="http://env.example:1"),
        "home": kubeconfig_for(home / ".kube" / "config", home="http://home.example:1"),
        "home_dir": str(home),
    }


def host(kubeconfig: str | None, environ: dict[str, str], home: str, **kw: str) -> str:
    source = kube.cli_source(kubeconfig, environ=environ, home=home)
    return str(kube.load(source, environ=environ, **kw).configuration.host)


IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_the_flag_comes_first(files: dict[str, str]) -> None:
    environ = {"KUBECONFIG": files["env"], **IN_CLUSTER}
    assert host(files["flag"], environ, files["home_dir"]) == "http://flag.example:1"


def test_then_kubeconfig_from_the_environment_and_not_the_home_file(files: dict[str, str]) -> None:
    environ = {"KUBECONFIG": f"/nonexistent:{files['env']}", **IN_CLUSTER}
    assert host(None, environ, files["home_dir"]) == "http://env.example:1"


def test_then_the_home_file(files: dict[str, str]) -> None:
    assert host(None, dict(IN_CLUSTER), files["home_dir"]) == "http://home.example:1"


def test_then_in_cluster(tmp_path: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("sa-token")
    (account / "ca.crt").write_text("not checked until used")
    source = kube.cli_source(
        None, environ=IN_CLUSTER, home=str(tmp_path), service_account_dir=str(account)
    )
    loaded = kube.load(source, environ=IN_CLUSTER)
    assert loaded.configuration.host == "https://10.96.0.1:443"
    assert loaded.description == "in-cluster service account"


def test_kubeconfig_files_are_merged_in_order(tmp_path: Path) -> None:
    first = kubeconfig_for(tmp_path / "a", a="http://a.example:1")
    second = kubeconfig_for(tmp_path / "b", b="http://b.example:1")
    environ = {"KUBECONFIG": f"{first}:{second}"}
    assert host(None, environ, str(tmp_path)) == "http://a.example:1"
    assert host(None, environ, str(tmp_path), context="b") == "http://b.example:1"


def test_nothing_at_all_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(kube.KubeConfigError, match=r"^no Kubernetes configuration: .*--kubeconfig"):
        kube.cli_source(None, environ={}, home=str(tmp_path))


def test_a_kubeconfig_variable_naming_only_missing_files_is_said(tmp_path: Path) -> None:
    with pytest.raises(kube.KubeConfigError, match=r"^\$KUBECONFIG: none of its files exists"):
        kube.cli_source(None, environ={"KUBECONFIG": "/nope:/nada"}, home=str(tmp_path))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file or directory"),
        ("clusters: [\n", "not valid YAML: line 2, column 1:"),
        ("- a list\n", "not a kubeconfig (expected one YAML mapping)"),
        ("", "not a kubeconfig (expected one YAML mapping)"),
        ('{"apiVersion": "v1", "kind": "Config", "contexts": []}', "current-context"),
    ],
    ids=["missing", "malformed", "not-a-mapping", "empty", "no-current-context"],
)
def test_an_unusable_kubeconfig_is_one_line_naming_it(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(kube.KubeConfigError) as caught:
        kube.load(kube.cli_source(str(path)))
    message = str(caught.value)
    assert message.startswith(f"--kubeconfig: {path}: ")
    assert problem in message and "\n" not in message


def test_an_unknown_context_lists_the_known_ones(files: dict[str, str]) -> None:
    with pytest.raises(kube.KubeConfigError, match=r"no context 'prod' \(contexts: flag\)$"):
        kube.load(kube.cli_source(files["flag"]), context="prod")


def test_a_context_in_cluster_is_refused() -> None:
    with pytest.raises(kube.KubeConfigError, match="^--context x: running in-cluster"):
        kube.load(kube.InCluster(), context="x")


@pytest.mark.parametrize(
    ("kubeconfig", "environ", "expected"),
    [
        (None, {"KUBECONFIG": "/etc/kc", "HOME": "/root"}, None),
        (None, IN_CLUSTER, kube.InCluster()),
        ("/etc/kc", IN_CLUSTER, kube.Files("--kubeconfig", ("/etc/kc",))),
    ],
)
def test_the_webhook_reads_only_its_flag_or_its_pod(
    kubeconfig: str | None, environ: dict[str, str], expected: object
) -> None:
    assert kube.webhook_source(kubeconfig, environ=environ) == expected


# --- through the commands, against the API stand-in ------------------------------------------


@pytest.fixture
def stand_in(stand_in: StandIn) -> StandIn:
    stand_in.put_object(node_object("n1"))
    return stand_in


def test_capacity_uses_kubeconfig_from_the_environment(
    stand_in: StandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kc", stand_in.url))
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    assert main(["capacity"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("n1 ")


def test_capacity_context_picks_the_cluster(
    stand_in: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kubeconfig_for(tmp_path / "kc", dead="http://127.0.0.1:9", live=stand_in.url)
    assert main(["capacity", "--kubeconfig", path, "--context", "live"]) == 0
    assert "n1" in capsys.readouterr().out


def test_the_webhook_refuses_to_start_with_an_unusable_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [\n", encoding="utf-8")
    result = run_webhook("--kubeconfig", path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"virtdev webhook: --kubeconfig: {path}: not valid YAML")
    assert result.stderr.count("\n") == 1
