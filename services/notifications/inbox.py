"""The in-app inbox the apps read: messages newest first, read and unread.

A key scoped to one library sees, and marks, only the messages sent on behalf of that library.
"""

from __future__ import annotations

from typing import Any

from services.notifications.inbox_store import InboxStore
from services.notifications.projection_store import ProjectionStore
from services.notifications.state import InboxMessage
from shared.auth import Principal
from shared.problems import Problem, not_found


class Inbox:
    def __init__(self, projections: ProjectionStore, store: InboxStore) -> None:
        self._projections = projections
        self._store = store

    async def messages(
        self, member_id: str, caller: Principal, limit: int, unread_only: bool
    ) -> tuple[str, list[InboxMessage]]:
        resolved = await self._projections.resolve(member_id)
        found = await self._store.inbox(resolved, limit, unread_only)
        return resolved, [m for m in found if caller.covers(m.library)]

    async def mark(self, member_id: str, message_id: str, read: bool, caller: Principal) -> dict[str, Any]:
        resolved = await self._projections.resolve(member_id)
        message = await self._store.message(resolved, message_id)
        if message is None:
            raise not_found("message")
        if not caller.covers(message.library):
            raise Problem(403, "Forbidden", f"this key is scoped to library {caller.library!r}")
        await self._store.mark_read(resolved, message_id, read)
        return {"member_id": resolved, "message_id": message_id, "read": read}
