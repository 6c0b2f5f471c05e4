"""The floor for the webhook benchmark: a bare ASGI endpoint on the webhook's server stack.

It reads the body, parses the same AdmissionReview with the same JSON library (orjson), and
answers `allowed` for its uid: no rules, no framework, no middleware, no metrics, no logging.
It is served exactly as `virtdev webhook` serves /mutate: uvicorn with httptools on uvloop,
`loop="none"`, the TLS context of `certs.tls.ServingTLS`, no access log, no server header. What
/mutate costs beyond this floor is what virtdev (FastAPI, the rules, logs, metrics) adds.

    python bench/floor_app.py --port 9443 --tls-cert tls.crt --tls-key tls.key
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEADERS = [(b"content-type", b"application/json")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # no lifespan: nothing to start
        return
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    args = parser.parse_args()

    import uvicorn
    import uvloop

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from certs.tls import ServingTLS
    from webhook.server import uvicorn_config

    tls = ServingTLS(args.tls_cert, args.tls_key)
    config = uvicorn_config(app, host=args.host, port=args.port, tls=tls, lifespan="off")

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(f"floor ready on https://{args.host}:{args.port}", flush=True)

    uvloop.run(Server(config).serve())


if __name__ == "__main__":
    main()
