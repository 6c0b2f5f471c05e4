"""The harness every process-starting test and bench shares: ports, waiting, stopping, and the
real `virtdev webhook` process.

Only this module spells out the `virtdev webhook` command line, waits for the process to be
ready (its printed ready line with throwaway certificates, else its own /readyz answer) and
stops it; tests add their clients on top (tests/webhook/serving/test_e2e.py's `Webhook`),
benches their load. The benches import it too (bench/webhook_*.py): none of it depends on pytest.
"""

from __future__ import annotations

import ast
import contextlib
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
#: `virtdev` as the tests run it: this interpreter, this checkout.
VIRTDEV = (sys.executable, "-m", "virtdev.cli")
#: A cold interpreter importing uvicorn, FastAPI and the rules on a loaded 2-core machine.
STARTUP_SECONDS = 60.0
READY_LINE = "virtdev webhook ready"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago: bind port 0, read it, release it."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct free ports: all sockets are held until every port is chosen."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def eventually(
    probe: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.02
) -> T:
    """Poll a condition until it gives a truthy value; fail naming `what` after `timeout`.

    For conditions only observable from outside (a process's answers, its metrics); where an
    event or a line of output can be awaited, the tests await that instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return int(process.returncode)


def heavy_imports(statements: str, heavy: set[str]) -> list[str]:
    """Which of the `heavy` top-level packages a fresh interpreter has imported after running
    `statements` (to keep what every process runs light)."""
    code = (
        f"import sys; {statements}; heavy = set({sorted(heavy)!r}); "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return list(ast.literal_eval(result.stdout.strip()))


def refuses_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on the port any more (a connection is refused, not accepted)."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def status_kib(pid: int, name: str = "VmRSS") -> int:
    """A size from /proc/<pid>/status in KiB: VmRSS (resident now), VmHWM (its peak), ..."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {name} for pid {pid}")


def sample(metrics: str, name: str) -> float | None:
    """One sample of Prometheus text (name with its labels, as exposed); None when absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else None


def metrics_text(metrics_port: int) -> str:
    """What the process's probe port answers on /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def readyz(metrics_port: int) -> bool:
    """Whether the process's probe port answers /readyz with 200."""
    try:
        url = f"http://127.0.0.1:{metrics_port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# --- the webhook process ----------------------------------------------------------------------


class NotStarted(RuntimeError):
    """`virtdev webhook` exited or was not ready in time; the message ends with its log."""


@dataclass
class WebhookProcess:
    """A running `virtdev webhook` on 127.0.0.1: stderr (its log) goes to `log`."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path
    #: Where its throwaway certificates are (None when it serves --tls-cert/--tls-key).
    certs: Path | None = None
    #: What it printed once listening, with throwaway certificates: the ready line and a curl
    #: command.
    ready_line: str = ""
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ca_cert(self) -> Path:
        assert self.certs is not None, "serves certificates of its own: use theirs"
        return self.certs / "ca.crt"

    def metrics(self) -> str:
        return metrics_text(self.metrics_port)

    def ready(self) -> bool:
        """Whether /readyz answers 200."""
        return readyz(self.metrics_port)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (a Deployment's normal end), SIGKILL after `timeout`; the exit status."""
        code = stop(self.process, timeout)
        if self._reader is not None:
            self._reader.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def webhook_command(
    port: int, metrics_port: int, *flags: str, tls: tuple[Path, Path] | None = None
) -> list[str]:
    """`virtdev webhook` on 127.0.0.1 with JSON logs: with `tls`, serving that certificate and
    key; without, making throwaway certificates (flags then name --dev-certs-dir)."""
    command = [*VIRTDEV, "webhook", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--metrics-port", str(metrics_port), "--log-format", "json"]
    if tls is not None:
        command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    return [*command, *flags]


def run_webhook(*flags: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`virtdev webhook FLAGS` run to its end: for flags it refuses at start."""
    return subprocess.run(
        [*VIRTDEV, "webhook", *map(str, flags)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def start_webhook(
    directory: Path,
    *flags: str | Path,
    tls: tuple[Path, Path] | None = None,
    prefix: Sequence[str] = (),
    log: Path | None = None,
    attempts: int = 3,
    timeout: float = STARTUP_SECONDS,
) -> WebhookProcess:
    """Start `virtdev webhook` on free ports, its log in `directory`; return once it is ready.

    Without `tls` it makes throwaway certificates in `directory`/dev-certs and is ready when it
    prints its ready line; with `tls` (certificate, key) it is ready when /readyz answers 200.
    `prefix` runs it (`taskset -c 1`, a shell setting `ulimit -n` first); its log (stderr) goes to
    `log`, by default a file in `directory`. A port taken between choosing and binding it is
    tried again on others, `attempts` times in all.
    """
    directory.mkdir(parents=True, exist_ok=True)
    certs = None if tls is not None else directory / "dev-certs"
    extra = [str(flag) for flag in flags]
    if certs is not None:
        extra += ["--dev-certs-dir", str(certs)]
    for attempt in range(attempts):
        port, metrics_port = free_ports(2)
        log_path = log or directory / f"webhook-{port}-{attempt}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*prefix, *webhook_command(port, metrics_port, *extra, tls=tls)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        assert process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        reader.start()
        server = WebhookProcess(process, port, metrics_port, log_path, certs, _reader=reader)
        try:
            if tls is None:
                server.ready_line = _ready_line(process, lines, timeout)
            else:
                until_ready(process, server.ready, "virtdev webhook", timeout)
            return server
        except NotStarted as error:
            server.stop()
            text = log_path.read_text(errors="replace")
            if "address already in use" in text:
                continue  # lost a race for a port: again, on others
            raise NotStarted(f"{error}; its log:\n{text}") from None
    raise NotStarted(f"virtdev webhook could not bind free ports in {attempts} attempts")


@contextlib.contextmanager
def running_webhook(
    directory: Path,
    *flags: str | Path,
    tls: tuple[Path, Path] | None = None,
    prefix: Sequence[str] = (),
    log: Path | None = None,
) -> Iterator[WebhookProcess]:
    """`start_webhook`, stopped on the way out."""
    server = start_webhook(directory, *flags, tls=tls, prefix=prefix, log=log)
    try:
        yield server
    finally:
        server.stop()


def _pump(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.decode(errors="replace"))
    lines.put(None)


def _ready_line(
    process: subprocess.Popen[bytes], lines: queue.Queue[str | None], timeout: float
) -> str:
    """The ready line and the curl line printed after it; NotStarted on exit or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise NotStarted(
                f"virtdev webhook printed no ready line within {timeout:g} s"
            ) from None
        if line is None:
            code = process.wait(timeout=30)
            raise NotStarted(f"virtdev webhook exited {code} before it was ready")
        if line.startswith(READY_LINE):
            return line + (lines.get(timeout=timeout) or "")


def until_ready(
    process: subprocess.Popen[bytes], check: Callable[[], bool], what: str, timeout: float
) -> None:
    """Poll a process's own readiness answer (`check`) until it is true; NotStarted when the
    process exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise NotStarted(f"{what} exited {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise NotStarted(f"{what} not ready within {timeout:g} s")
        time.sleep(0.05)  # polling interval of the readiness answer
