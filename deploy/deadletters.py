"""`klantreis dead-letters list|show|replay`: what consumers could not handle, why, and sending it back after a fix.

A dead letter is a record a consumer could not decode or handle, kept as it was (key, value, headers) on
`<topic>.dlq`, with `dlq_*` headers saying why (`dlq_reason`, `dlq_error`) and where it came from (`dlq_topic`,
`dlq_partition`, `dlq_offset`, `dlq_group`, `dlq_at`); see `shared.kafka`.

- `list` counts the dead letters per dead-letter topic and reason.
- `show` prints them: position on the dead-letter topic (`partition:offset`, what `--offset` selects), reason,
  error, origin, headers and payload.
- `replay` publishes the selected ones (`--reason`, `--offset`, or `--all`), as they were, to their original
  topic, with the idempotent acks=all producer of `shared.kafka`. Every consumer group of that topic reads them
  again; every handler is idempotent by event id, so a replayed event that was handled meanwhile, or one replayed
  twice, has its effect once.

Failed deliveries on `notifications.deliveries.v1.dlq` are not records of a topic (no `dlq_offset`): `list` and
`show` include them, `replay` leaves them alone.

Items the ingest endpoints refused are on `ingest.failed.v1` (`shared.failed_items`): `list` and `show` include
them; `replay` posts them again to the service that refused them (events to `POST /v1/events`, loan reports to
`POST /v1/loans/batch`, a batch per service, library, role and endpoint; any other item, such as a card activation
or a consent, one by one to the route that refused it, with its kept id as the Idempotency-Key), through the same
validation, under a short-lived key with the original caller's library scope and role (`ingest`, or a publishable
key's limits for what a web tracker posted), revoked afterwards; its key id is the same for every replay of that
library and role. Ids are claimed there: an item replayed twice is handled once. An item refused again is kept
again, with its new reason. Items kept truncated, not as JSON, or without their personal data are not replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import httpx
from aiokafka.errors import KafkaError

from deploy.commands import command, say
from deploy.progress import Progress
from deploy.runtime import RuntimeProblem
from shared.auth import Keyring
from shared.consumers import read_to_end
from shared.failed_items import ENDPOINTS, EVENTS_ENDPOINT, LOANS_ENDPOINT, REPLAY_PREFIX, replay_key_id
from shared.kafka import make_broker
from shared.redis import make_redis
from shared.settings import Settings
from shared.topics import ALL_TOPICS

DLQ_HEADER_PREFIX = "dlq_"
# Set on a replayed record: which dead letter it came from (for whoever reads the topic later).
REPLAYED_FROM = "replayed_from"
PAYLOAD_SHOWN = 2000

Say = Callable[[str], None]


@dataclass(frozen=True)
class DeadLetter:
    topic: str  # the dead-letter topic
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "backslashreplace")
        return None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.header("dlq_reason") or "unknown"

    @property
    def original_topic(self) -> str | None:
        return self.header("dlq_topic")

    @property
    def refused_by(self) -> str | None:
        """The service whose ingest endpoint refused this item (a failed-events record), else None."""
        return self.header("failed_service")

    @property
    def replayable(self) -> bool:
        """A consumed record (it has an original offset), or a refused item kept whole as a JSON object with its
        personal data; not a failed delivery."""
        if self.refused_by is not None:
            whole = self.header("failed_truncated") is None and self.header("failed_redacted") is None
            return whole and self.value.lstrip()[:1] == b"{"
        return self.original_topic is not None and self.header("dlq_offset") is not None

    def original_headers(self) -> dict[str, str]:
        """The headers the record had before it was dead-lettered, and where it is replayed from."""
        headers = {
            key: value.decode("utf-8", "backslashreplace")
            for key, value in self.headers
            if not key.startswith(DLQ_HEADER_PREFIX) and key != REPLAYED_FROM
        }
        headers[REPLAYED_FROM] = f"{self.topic}:{self.position}"
        return headers


# ------------------------------------------------------------------------------------------------ reading


def dead_letter_topics(settings: Settings, topic: str | None = None) -> list[str]:
    """The physical dead-letter topics of the platform, or of one logical topic (`identity.members.v1`)."""
    # A topic without dead letters (the failed-events topic) holds them itself.
    names = [
        t.dead_letters if t.has_dead_letters else t.name
        for t in ALL_TOPICS
        if topic is None or topic in (t.name, t.dead_letters)
    ]
    if not names:
        known = ", ".join(t.name for t in ALL_TOPICS)
        raise RuntimeProblem(f"no topic {topic!r}; the platform's topics are {known}")
    return [settings.topic(name) for name in names]


async def read_dead_letters(settings: Settings, topics: Sequence[str]) -> list[DeadLetter]:
    """Every record of the dead-letter topics as they stand now (all partitions, up to their end offsets)."""
    letters = [
        DeadLetter(r.topic, r.partition, r.offset, r.key, r.value or b"", tuple(r.headers or ()))
        for r in await read_to_end(settings.kafka_bootstrap, *topics, security=settings.kafka_security())
    ]
    return sorted(letters, key=lambda d: (d.topic, d.partition, d.offset))


def select(
    letters: Sequence[DeadLetter], *, reason: str | None = None, offsets: Sequence[str] = ()
) -> list[DeadLetter]:
    """Those with `reason` (if given) at one of `offsets` (`partition:offset` on the dead-letter topic, if any)."""
    wanted = set(offsets)
    return [d for d in letters if (reason is None or d.reason == reason) and (not wanted or d.position in wanted)]


# ------------------------------------------------------------------------------------------------ actions


def counts(letters: Sequence[DeadLetter]) -> Counter[tuple[str, str]]:
    return Counter((d.topic, d.reason) for d in letters)


def describe(letter: DeadLetter, *, full: bool = False) -> list[str]:
    origin = letter.original_topic or "?"
    if letter.refused_by is not None:
        where = f"{letter.header('failed_method') or 'POST'} {letter.header('failed_endpoint') or EVENTS_ENDPOINT}"
        origin = f"{letter.refused_by} {where} (library {letter.header('failed_library')})"
    if letter.header("dlq_partition") is not None:
        origin += f"[{letter.header('dlq_partition')}]@{letter.header('dlq_offset')}"
    lines = [
        f"{letter.topic} {letter.position}  {letter.reason}  from {origin}"
        f"  group {letter.header('dlq_group') or '?'}  at {letter.header('dlq_at') or '?'}",
        f"  error:   {letter.header('dlq_error') or ''}",
    ]
    own = {k: v for k, v in letter.original_headers().items() if k != REPLAYED_FROM}
    lines.append(f"  headers: {json.dumps(own, ensure_ascii=False)}")
    lines.append(f"  key:     {(letter.key or b'').decode('utf-8', 'backslashreplace')}")
    payload = letter.value.decode("utf-8", "backslashreplace")
    if not full and len(payload) > PAYLOAD_SHOWN:
        payload = payload[:PAYLOAD_SHOWN] + f"… ({len(letter.value)} bytes; --full shows all)"
    lines.append(f"  payload: {payload}")
    if not letter.replayable:
        what = "an item truncated, not JSON or without its personal data" if letter.refused_by else (
            "a failed delivery, not a consumed record")  # fmt: skip
        lines.append(f"  ({what}: not replayed)")
    return lines


async def replay(settings: Settings, letters: Sequence[DeadLetter]) -> Counter[str]:
    """Publish the replayable letters to their original topics; returns how many went to each topic."""
    todo = [d for d in letters if d.replayable and d.refused_by is None]
    sent: Counter[str] = Counter()
    if not todo:
        return sent
    broker = make_broker(settings, service="dead-letters")
    await broker.start()
    try:
        with Progress(len(todo), unit="dead letters", what="replaying") as progress:
            for letter in todo:
                topic = letter.original_topic
                assert topic is not None
                await broker.publish(letter.value, topic, key=letter.key, headers=letter.original_headers())
                sent[topic] += 1
                progress.update(sum(sent.values()))
    finally:
        await broker.stop()
    return sent


REPOST_BATCH = 1000


@dataclass(frozen=True)
class Destination:
    """Where a group of refused items is posted again, and as whom."""

    service: str
    library: str
    role: str
    method: str
    endpoint: str


def destination(letter: DeadLetter) -> Destination:
    assert letter.refused_by is not None
    return Destination(
        letter.refused_by,
        letter.header("failed_library") or "*",
        letter.header("failed_role") or "ingest",
        letter.header("failed_method") or "POST",
        letter.header("failed_endpoint") or EVENTS_ENDPOINT,
    )


def reposted_item(letter: DeadLetter) -> object:
    """The item as a replay posts it: as kept, and a loan report without an id of its own gets the one it was kept
    under, so that it is published once however often it is replayed."""
    item = json.loads(letter.value)
    if letter.header("failed_endpoint") == LOANS_ENDPOINT and isinstance(item, dict) and not item.get("id"):
        item["id"] = (letter.key or b"").decode() or None
    return item


async def repost(settings: Settings, letters: Sequence[DeadLetter]) -> Counter[tuple[str, str]]:
    """Post the replayable refused items again to the services that refused them; returns how many each service
    accepted and refused again: (service, "accepted" | "refused")."""
    groups: dict[Destination, list[DeadLetter]] = {}
    for letter in letters:
        if letter.replayable and letter.refused_by is not None:
            groups.setdefault(destination(letter), []).append(letter)
    outcome: Counter[tuple[str, str]] = Counter()
    if not groups:
        return outcome
    redis = make_redis(settings)
    keyring = Keyring(redis, settings)
    total = sum(len(found) for found in groups.values())
    try:
        async with httpx.AsyncClient(timeout=60.0) as http:
            with Progress(total, unit="items", what="reposting") as progress:
                for to, found in groups.items():
                    # The same key id every time (`replay_key_id`), a new secret each run.
                    key_id = replay_key_id(to.role, to.library)
                    key = f"kr_{key_id}_{secrets.token_urlsafe(32)}"
                    await keyring.store(key, "dead-letters replay", [to.role], to.library)
                    try:
                        answers = _posted_in_batches if to.endpoint in ENDPOINTS else _posted_one_by_one
                        async for service_outcome in answers(http, settings, to, found, key):
                            outcome.update(service_outcome)
                            progress.update(sum(outcome.values()))
                    finally:
                        await keyring.revoke(key_id)
    finally:
        await redis.aclose()
    return outcome


async def _posted_in_batches(
    http: httpx.AsyncClient, settings: Settings, to: Destination, found: Sequence[DeadLetter], key: str
) -> AsyncIterator[Counter[tuple[str, str]]]:
    url = str(getattr(settings, f"{to.service}_url"))
    content_type, field = ENDPOINTS[to.endpoint]
    for start in range(0, len(found), REPOST_BATCH):
        items = [reposted_item(d) for d in found[start : start + REPOST_BATCH]]
        answer = await http.post(
            f"{url}{to.endpoint}",
            content=json.dumps({field: items} if field else items).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        )
        if answer.status_code not in (202, 422):
            raise RuntimeProblem(f"{to.service} answered {answer.status_code}; run the replay again")
        body = answer.json()
        yield Counter({(to.service, "accepted"): len(body.get("accepted", [])),
                       (to.service, "refused"): len(body.get("rejected", []))})  # fmt: skip


async def _posted_one_by_one(
    http: httpx.AsyncClient, settings: Settings, to: Destination, found: Sequence[DeadLetter], key: str
) -> AsyncIterator[Counter[tuple[str, str]]]:
    """A command (a card activation, a consent…) to the route that refused it, its kept id as the
    Idempotency-Key."""
    url = str(getattr(settings, f"{to.service}_url"))
    for letter in found:
        answer = await http.request(
            to.method,
            f"{url}{to.endpoint}",
            content=letter.value,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "Idempotency-Key": f"{REPLAY_PREFIX}{(letter.key or b'').decode()}"},
        )  # fmt: skip
        if answer.status_code >= 500 or "Retry-After" in answer.headers:
            raise RuntimeProblem(f"{to.service} answered {answer.status_code}; run the replay again")
        yield Counter({(to.service, "accepted" if answer.status_code < 400 else "refused"): 1})


# ---------------------------------------------------------------------------------------------- the command


def arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="count dead letters per dead-letter topic and reason")
    show = sub.add_parser("show", help="print dead letters: reason, error, origin, headers, payload")
    again = sub.add_parser("replay", help="publish selected dead letters to their original topic (after a fix)")
    for action in (listing, show, again):
        action.add_argument("--topic", help="only this topic's dead letters, e.g. identity.members.v1")
    for action in (show, again):
        action.add_argument("--reason", help="only dead letters with this reason, e.g. handler_error")
        action.add_argument(
            "--offset",
            action="append",
            default=[],
            metavar="PARTITION:OFFSET",
            help="only the dead letter at this position of its dead-letter topic (as `show` prints it); repeatable",
        )
    show.add_argument("--limit", type=int, default=50, help="print at most this many (default 50; 0: all)")
    show.add_argument("--full", action="store_true", help="print whole payloads")
    again.add_argument("--all", action="store_true", help="replay every dead letter (of --topic, if given)")


def run(args: argparse.Namespace, settings: Settings, say: Say) -> int:
    if args.action == "replay" and not (args.all or args.reason or args.offset):
        raise RuntimeProblem("say what to replay: --reason REASON, --offset PARTITION:OFFSET or --all")
    topics = dead_letter_topics(settings, args.topic)
    try:
        letters = asyncio.run(read_dead_letters(settings, topics))
    except (KafkaError, OSError) as exc:
        raise RuntimeProblem(
            f"Kafka at {settings.kafka_bootstrap} is not reachable ({type(exc).__name__}); start it with `klantreis up`"
        ) from None
    if args.action == "list":
        found = counts(letters)
        if not found:
            say("no dead letters")
            return 0
        width = max(len(topic) for topic, _ in found)
        say(f"{'dead-letter topic':<{width}}  {'reason':<20} count")
        for (topic, reason), count in sorted(found.items()):
            say(f"{topic:<{width}}  {reason:<20} {count}")
        say(f"{'total':<{width}}  {'':<20} {sum(found.values())}")
        return 0
    chosen = select(letters, reason=args.reason, offsets=args.offset)
    if args.action == "show":
        shown = chosen if args.limit <= 0 else chosen[: args.limit]
        for letter in shown:
            for line in describe(letter, full=args.full):
                say(line)
        say(f"{len(shown)} of {len(chosen)} dead letters shown")
        return 0
    skipped = sum(1 for d in chosen if not d.replayable)
    try:
        sent = asyncio.run(replay(settings, chosen))
        posted = asyncio.run(repost(settings, chosen))
    except (KafkaError, OSError) as exc:
        raise RuntimeProblem(f"replay stopped: Kafka answered {type(exc).__name__}; run it again") from None
    except httpx.HTTPError as exc:
        raise RuntimeProblem(f"replay stopped: a service did not answer ({type(exc).__name__}); run it again") from None
    for topic, count in sorted(sent.items()):
        say(f"replayed {count} to {topic}")
    for service in sorted({s for s, _ in posted}):
        accepted, refused = posted[(service, "accepted")], posted[(service, "refused")]
        say(f"reposted {accepted + refused} to {service}: {accepted} accepted, {refused} refused again")
    if skipped:
        say(f"{skipped} left alone (failed deliveries, or refused items truncated or not JSON)")
    if not sent and not posted:
        say("nothing replayed: no dead letter matches")
    return 0


@command("dead-letters", "list, show and replay dead-lettered messages (counts per topic and reason)", arguments)
def cmd_dead_letters(args: argparse.Namespace) -> int:
    return run(args, Settings(), say)
