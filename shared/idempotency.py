"""`Idempotency-Key` on writes, the same in every service: a retried request gets the first answer.

The answer (status and JSON body) is kept for 24 hours under the caller's key id and the Idempotency-Key,
with a fingerprint of the request: the same key with a different request is refused. While the first request
runs, a retry gets 409. Operations take a `seed` that is set when the request carries a key; they derive their
ids from it, so that a retry after a crash between publishing and answering publishes the same event ids, which
consumers recognise, instead of new ones.

Every write route takes the `Write` dependency (the Idempotency-Key header comes with it) and hands it its
operation; nothing else in a route deals with keys or stored replies.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, cast

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.asyncio import Redis

from shared.auth import Principal
from shared.events.envelope import deterministic_id
from shared.problems import Problem
from shared.settings import Settings

REPLY_TTL_SECONDS = 24 * 3600
PENDING_TTL_SECONDS = 60


class Ids:
    """Ids for one operation: random without an Idempotency-Key, derived from it with one."""

    def __init__(self, seed: str | None) -> None:
        self._seed = seed

    def new(self, purpose: str) -> str:
        if self._seed is None:
            return str(uuid.uuid4())
        # uuid5(NAMESPACE_URL, "klantreis:idem:<seed>:<purpose>"), computed without the UUID objects.
        return deterministic_id(f"idem:{self._seed}:{purpose}")


Operation = Callable[[Ids], Awaitable[tuple[int, Any]]]


class IdempotentReplies:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings

    async def once(
        self, request: Request, caller: Principal, idempotency_key: str | None, body: Any, operation: Operation
    ) -> JSONResponse:
        """Run `operation` once per Idempotency-Key; without a key, just run it."""
        if idempotency_key is None:
            status, reply = await operation(Ids(None))
            return JSONResponse(reply, status_code=status)
        fingerprint = hashlib.sha256(
            json.dumps([request.method, request.url.path, body], sort_keys=True, default=str).encode()
        ).hexdigest()
        key = self._settings.key("idem", caller.key_id, hashlib.sha256(idempotency_key.encode()).hexdigest())
        if not await self._redis.set(key, json.dumps({"pending": fingerprint}), nx=True, ex=PENDING_TTL_SECONDS):
            return self._replay(cast(str | None, await self._redis.get(key)), fingerprint)
        try:
            status, reply = await operation(Ids(f"{caller.key_id}:{idempotency_key}"))
        except BaseException:
            await self._redis.delete(key)
            raise
        if status < 500:
            stored = {"fingerprint": fingerprint, "status": status, "reply": reply}
            await self._redis.set(key, json.dumps(stored), ex=REPLY_TTL_SECONDS)
        else:
            await self._redis.delete(key)
        return JSONResponse(reply, status_code=status)

    @staticmethod
    def _replay(raw: str | None, fingerprint: str) -> JSONResponse:
        if raw is None:
            # A "post it again", like the one still in progress below: not a refused item (shared/failed_items.py).
            raise Problem(
                409,
                "Conflict",
                "a request with this Idempotency-Key just finished; retry it",
                headers={"Retry-After": "1"},
            )
        stored = json.loads(raw)
        if stored.get("fingerprint", stored.get("pending")) != fingerprint:
            raise Problem(
                422,
                "Unprocessable Content",
                "this Idempotency-Key was used for a different request",
                errors=[],
            )
        if "pending" in stored:
            raise Problem(
                409,
                "Conflict",
                "a request with this Idempotency-Key is still in progress; retry later",
                headers={"Retry-After": "1"},
            )
        return JSONResponse(stored["reply"], status_code=stored["status"], headers={"Idempotent-Replayed": "true"})


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Makes the write safe to retry: the same key gets the same answer and publishes nothing twice.",
    ),
]


class IdempotentWrite:
    """What a write route needs to run its operation once per Idempotency-Key: the request, the key it carries
    and the service's replies. Routes take it as `write: Write` and end with `return await write(caller, body,
    run)`."""

    def __init__(self, replies: IdempotentReplies, request: Request, idempotency_key: str | None) -> None:
        self._replies = replies
        self._request = request
        self._idempotency_key = idempotency_key

    async def __call__(self, caller: Principal, body: Any, operation: Operation) -> JSONResponse:
        """`body` is what makes two requests the same one (a pydantic model is compared as its JSON form; None for
        a write that has no body)."""
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        return await self._replies.once(self._request, caller, self._idempotency_key, body, operation)


def _write(request: Request, idempotency_key: IdempotencyKey = None) -> IdempotentWrite:
    replies: IdempotentReplies = request.app.state.idempotent_replies
    return IdempotentWrite(replies, request, idempotency_key)


Write = Annotated[IdempotentWrite, Depends(_write)]
