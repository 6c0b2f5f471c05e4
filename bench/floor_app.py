"""The floor for the webhook benchmark: a bare ASGI endpoint on the webhook's server stack.

It reads the body, parses the same AdmissionReview with the same JSON library (orjson), and
answers `allowed` for its uid: no rules, no framework, no middleware, no metrics, no logging.
It is served exactly as `virtdev webhook` serves /mutate: uvicorn with httptools on uvloop,
`loop="none"`, the TLS context of `certs.tls.ServingTLS`, no access log, no server header, on
the webhook's listener and protocol with their default limits (`webhook.serving.connections`). What
/mutate costs beyond this floor is what virtdev (FastAPI, the rules, logs, metrics) adds.

    python bench/floor_app.py --port 9443 --tls-cert tls.crt --tls-key tls.key

With `--log-line` it also writes the webhook's admission log line (JSON, `virtdev.logs.hot`, the
same fields) for every request: the floor plus nothing but what an operator needs per admission,
which shows how much of the benchmark's budget that one line takes on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from virtdev import logs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEADERS = [(b"content-type", b"application/json")]
#: Set by --log-line (see the module's docstring).
LOG_LINE = False


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    # Written out in one function on purpose: each helper coroutine would add about 1,800
    # instructions per request (bench/webhook_instructions.py), and the floor is the baseline.
    if scope["type"] != "http":  # no lifespan: nothing to start
        return
    started = time.perf_counter() if LOG_LINE else 0.0
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    review = orjson.loads(b"".join(chunks))
    answer = {
        "apiVersion": review["apiVersion"],
        "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], "allowed": True},
    }
    body = orjson.dumps(answer)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
    if LOG_LINE:
        _log_line(review, started)


def _log_line(review: dict[str, Any], started: float) -> None:
    request = review["request"]
    fields = {
        "endpoint": "mutate",
        "uid": request["uid"],
        "pod": f"{request.get('namespace', '')}/{request.get('name', '')}",
        "operation": request["operation"],
        "verdict": "allowed",
        "patch_ops": 0,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    logs.hot(logging.getLogger("virtdev.webhook"), "admission allowed", fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--log-line", action="store_true", help="write the admission log line")
    args = parser.parse_args()

    import uvloop

    from certs.tls import ServingTLS
    from webhook.serving.connections import ConnectionLimits, ConnectionMetrics
    from webhook.serving.server import CannotListen, HttpsServer, listen, uvicorn_config

    if args.log_line:
        global LOG_LINE
        LOG_LINE = True
        logs.setup("json")  # to stderr, as `virtdev webhook --log-format json` logs

    tls = ServingTLS(args.tls_cert, args.tls_key)
    config = uvicorn_config(app, host=args.host, port=args.port, tls=tls, lifespan="off")

    ready = [f"floor ready on https://{args.host}:{args.port}"]
    server = HttpsServer(config, ready, limits=ConnectionLimits(), metrics=ConnectionMetrics())
    try:
        sock = listen(args.host, args.port)
    except CannotListen as error:
        sys.exit(f"floor: {error}")

    async def serve() -> None:
        flusher = asyncio.create_task(logs.flush_every())  # as the webhook's lifespan runs it
        try:
            await server.serve(sockets=[sock])
        finally:
            flusher.cancel()
            logs.flush()

    with sock:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
