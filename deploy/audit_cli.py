"""`klantreis audit`: the admin audit trail (`shared.audit`), and the records of the admin writes made here.

klantreis audit                              every record, oldest first
klantreis audit --since 2026-12-01 --target campaign:c-1
klantreis audit --json                       one JSON object a line
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from dataclasses import asdict
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from deploy.commands import command, say
from deploy.runtime import RuntimeProblem
from shared.audit import read_trail, recorded
from shared.events.admin import AdminAction
from shared.idempotency import Ids
from shared.kafka import EventPublisher, make_broker
from shared.settings import Settings
from shared.topics import AUDIT, ensure_topics


async def record_command_line(settings: Settings, action: AdminAction, target: str) -> None:
    """Record an admin write made at the command line (no API key: `key_id` is none)."""
    await ensure_topics(settings, [AUDIT])
    broker = make_broker(settings, service="cli")
    await broker.start()
    try:
        await EventPublisher(broker, settings).publish(recorded(action, target, None, service="cli", ids=Ids(None)))
    finally:
        with contextlib.suppress(Exception):
            await broker.stop()


def _since(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_since, default=None, help="records at or after this ISO date or moment")
    parser.add_argument("--target", default=None, help="records about one target, e.g. campaign:c-1 or library:oba")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")


@command("audit", "show the admin audit trail: who (key id) did what to what, when", _arguments)
def cmd_audit(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        trail = asyncio.run(read_trail(settings, since=args.since, target=args.target))
    except KafkaError as exc:
        raise RuntimeProblem(f"the audit topic could not be read from Kafka ({type(exc).__name__})") from None
    for entry in trail:
        say(json.dumps({**asdict(entry), "time": entry.time.isoformat()}) if args.json else entry.line())
    if not trail and not args.json:
        say("no admin actions recorded")
    return 0
