"""A minimal ASGI service (no framework: FastAPI or Starlette route to the same handlers) whose
every request runs as the caller: ``Authorization: Bearer <WorkOS access token>``.

    GET  /documents[?sleep=seconds]    the caller's documents
    POST /documents                     {"title", "embedding", "workspace_id"?} -> {"id"}
    POST /search                        {"embedding", "k"?} -> tenancy.nearest's rows

Run: ``TENANCY_DSN=postgresql://app@127.0.0.1:6432/db TENANCY_DRIVER=asyncpg uvicorn
tenancy_example.app:app``. Refusals map to HTTP by SQLSTATE (errors.py).
"""

import json
import os
from urllib.parse import parse_qs

from .errors import status_of
from .stores import STORES


def bearer_token(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value.lower().startswith(b"bearer "):
            return value[7:].decode("ascii", "replace").strip()
    return None


async def read_json(receive) -> dict:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return json.loads(body or b"{}")


async def respond(send, status: int, payload) -> None:
    body = json.dumps(payload, default=str).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


def make_app(store):
    """The ASGI application over one of stores.STORES."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        token = bearer_token(scope)
        route = (scope["method"], scope["path"])
        try:
            if route == ("GET", "/documents"):
                query = parse_qs(scope.get("query_string", b"").decode())
                sleep = float(query.get("sleep", ["0"])[0])
                await respond(send, 200, await store.list_documents(token, sleep))
            elif route == ("POST", "/documents"):
                body = await read_json(receive)
                new_id = await store.add_document(token, body["title"], body["embedding"], body.get("workspace_id"))
                await respond(send, 201, {"id": new_id})
            elif route == ("POST", "/search"):
                body = await read_json(receive)
                await respond(send, 200, await store.nearest(token, body["embedding"], body.get("k", 10)))
            else:
                await respond(send, 404, {"error": "not found"})
        except (KeyError, ValueError) as e:
            await respond(send, 400, {"error": f"bad request: {e}"})
        except Exception as e:  # a database refusal: its SQLSTATE decides, its text is not echoed
            status = status_of(e)
            await respond(send, status, {"error": {401: "unauthenticated", 403: "forbidden", 400: "bad request"}.get(status, "internal error")})

    return app


def from_environment():
    store = STORES[os.environ.get("TENANCY_DRIVER", "asyncpg")](os.environ["TENANCY_DSN"])
    return make_app(store)
