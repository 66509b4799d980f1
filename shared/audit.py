"""The admin audit trail: every admin write is recorded on `admin.audit.v1` before it takes effect.

Recorded: campaign status changes (activate, pause, archive, restore), library changes and retirements, API key
creation and revocation. A record says who (the key's id, roles and scope; never its secret, nor its name, which
may name a person), what (`action`), to what (`target`, also the record's key and subject), through which service
and when (the event's time).

The record is published (acknowledged by Kafka) before the change itself is published, so no change takes effect
without its record. When the change then fails (503), the record stays: it says what was asked. A retry with the
same Idempotency-Key writes a record with the same id, which the trail shows once.

`klantreis audit` reads the trail (`read_trail`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.auth import NETWORK, Principal
from shared.consumers import read_to_end
from shared.events import CloudEvent, InvalidEvent, from_kafka, typed_data
from shared.events.admin import AdminAction, AdminActionRecorded
from shared.idempotency import Ids
from shared.publishing import EventPublisher
from shared.settings import Settings
from shared.topics import AUDIT


def recorded(
    action: AdminAction,
    target: str,
    caller: Principal | None,
    *,
    service: str,
    ids: Ids,
    library: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """The audit record of an admin write. `caller` None: an operator at the command line."""
    data = AdminActionRecorded(
        action=action,
        target=target,
        key_id=caller.key_id if caller is not None else None,
        roles=sorted(caller.roles) if caller is not None else [],
        scope=caller.library if caller is not None else NETWORK,
        service=service,
    )
    return CloudEvent.create(
        data,
        id=ids.new(f"audit:{action}:{target}"),
        subject=target,
        source=f"/{service}/admin",
        library=library,
        time=time,
    )


class AdminAudit:
    """Records a service's admin writes on the audit topic."""

    def __init__(self, publisher: EventPublisher, service: str) -> None:
        self._publisher = publisher
        self._service = service

    async def record(
        self,
        action: AdminAction,
        target: str,
        caller: Principal | None,
        ids: Ids,
        *,
        library: str | None = None,
        time: datetime | None = None,
    ) -> None:
        """Returns once Kafka acknowledged the record; raises (503 at the HTTP edge) otherwise."""
        event = recorded(action, target, caller, service=self._service, ids=ids, library=library, time=time)
        await self._publisher.publish(event)


@dataclass(frozen=True)
class AuditEntry:
    id: str
    time: datetime
    action: str
    target: str
    key_id: str | None
    roles: tuple[str, ...]
    scope: str
    service: str

    def line(self) -> str:
        who = f"key {self.key_id} ({','.join(self.roles)}; library {self.scope})" if self.key_id else "command line"
        return (
            f"{self.time.isoformat(timespec='seconds')}  {self.action:<18} {self.target:<32} {who} via {self.service}"
        )


def entries(events: Sequence[CloudEvent]) -> list[AuditEntry]:
    """The trail in time order, each record once (a retried write's record has the id of the first)."""
    seen: set[str] = set()
    found = []
    for event in events:
        if event.id in seen:
            continue
        seen.add(event.id)
        data = typed_data(event)
        assert isinstance(data, AdminActionRecorded)
        found.append(
            AuditEntry(
                event.id,
                event.utc_time,
                data.action,
                data.target,
                data.key_id,
                tuple(data.roles),
                data.scope,
                data.service,
            )
        )
    return sorted(found, key=lambda entry: entry.time)


async def read_trail(
    settings: Settings, *, since: datetime | None = None, target: str | None = None
) -> list[AuditEntry]:
    """The audit trail as it stands now, from the topic's start: records at or after `since`, about `target`."""
    events = []
    for record in await read_to_end(settings.kafka_bootstrap, settings.topic(AUDIT.name)):
        try:
            event = from_kafka(record.value, record.headers)
        except InvalidEvent:
            continue  # nothing but the platform's services writes here (least privilege); never a reason to stop
        if event.type != AdminActionRecorded.event_type:
            continue
        if since is not None and event.utc_time < since.astimezone(UTC):
            continue
        if target is not None and event.subject != target:
            continue
        events.append(event)
    return entries(events)
