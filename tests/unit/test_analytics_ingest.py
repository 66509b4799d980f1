"""analytics' ingest without I/O: Kafka records to rows (the fast decoder and the reference way agree, bad records
are named), and the consume loop's decoder hook (type filter first, dead letters with the reason, commits past
everything)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.structs import ConsumerRecord

from services.analytics.decoding import decode_facts
from services.analytics.facts import COLUMNS, Fact, epoch_ms
from shared.events import CloudEvent, InvalidEvent, to_kafka
from shared.kafka import _ConsumeLoop
from shared.settings import Settings
from shared.topics import MEMBERS

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SIGNED_UP, BORROWED = "member.signed_up.v1", "usage.loan_borrowed.v1"
PROFILE: dict[str, Any] = {
    "age_band": "0-3",
    "home_library": "oba",
    "postcode_area": "1034",
    "source": "consultatiebureau",
}


def ev(kind: str, n: int = 1, **data: object) -> CloudEvent:
    return CloudEvent(id=f"e{n}", source="/t", type=f"nl.bibliotheek.{kind}", time=T0, subject="m1", library="oba",
                      channel="online", platform="website", data=data)  # fmt: skip


def record(event: CloudEvent, offset: int = 0, *, value: bytes | None = None, **headers: str | None) -> Any:
    """The record aiokafka hands out for the event as the platform publishes it; `headers` replace (None: drop)."""
    kafka = to_kafka(event)
    named = {**kafka.headers, **headers}
    pairs = tuple((name, text.encode()) for name, text in named.items() if text is not None)
    return ConsumerRecord("t.identity.members.v1", 0, offset, 0, 0, kafka.key,
                          kafka.value if value is None else value, None, 0, 0, pairs)  # fmt: skip


def one(event: CloudEvent) -> Fact | InvalidEvent | None:
    [decoded] = decode_facts([record(event)])
    return decoded


def row(decoded: Fact | InvalidEvent | None) -> dict[str, Any]:
    assert isinstance(decoded, Fact), decoded
    return dict(zip(COLUMNS, decoded, strict=False))


def test_a_sign_up_row_keeps_the_profile_and_nothing_else_of_the_payload() -> None:
    signed = row(one(ev(SIGNED_UP, language="en", **PROFILE)))
    assert (signed["member_id"], signed["type"], signed["age_band"], signed["postcode_area"]) == (
        "m1", SIGNED_UP, "0-3", "1034",
    )  # fmt: skip
    assert (signed["home_library"], signed["source"], signed["channel"]) == ("oba", "consultatiebureau", "online")
    assert "en" not in signed.values() and signed["time"] == epoch_ms(T0) == int(T0.timestamp() * 1000)


def test_friction_rows_carry_their_own_attributes_and_a_resolution_its_seconds() -> None:
    detected = row(one(ev("friction.detected.v1", friction_id="f1", rule="r", library="haarlem", platform="app",
                          channel_pair="online→offline", age_band="4-11", start_event_id="s",
                          started_at=(T0 - DAY).isoformat(), due_at=T0.isoformat())))  # fmt: skip
    assert (detected["library"], detected["platform"], detected["rule"], detected["outcome"]) == (
        "haarlem", "app", "r", "detected",
    )  # fmt: skip
    assert (detected["started"], detected["due"]) == (epoch_ms(T0 - DAY), epoch_ms(T0))
    resolved = row(one(ev("friction.resolved.v1", friction_id="f1", rule="r", resolved_by_event_id="x",
                          resolved_at=T0.isoformat(), seconds_to_resolve=60.5)))  # fmt: skip
    assert (resolved["friction_id"], resolved["seconds"], resolved["outcome"]) == ("f1", 60.5, "resolved")


def test_a_switch_has_its_channel_pair_an_item_id_is_not_kept_and_a_merge_names_its_survivor() -> None:
    switch = row(one(ev("member.channel_switched.v1", from_channel="offline", from_platform="desk",
                        to_channel="online", to_platform="app")))  # fmt: skip
    assert (switch["channel_pair"], switch["to_channel"]) == ("offline→online", "online")
    loan = row(one(ev(BORROWED, item_id="isbn-123", loan_id="l1")))
    assert "isbn-123" not in loan.values()
    merged = one(ev("member.merged.v1", survivor_id="m2"))
    assert isinstance(merged, Fact) and (merged.member_id, merged.survivor_id) == ("m1", "m2")


def test_the_fast_way_and_the_reference_way_give_the_same_rows() -> None:
    # A structured-mode record goes the reference way (CloudEvent, then its model); binary ones the fast way.
    events = [ev(SIGNED_UP, 1, **PROFILE), ev(BORROWED, 2, item_id="i", loan_id="l"),
              ev("friction.detected.v1", 3, friction_id="f", rule="r", start_event_id="s",
                 started_at=(T0 - DAY).isoformat(), due_at=T0.isoformat())]  # fmt: skip
    fast = decode_facts([record(e, n) for n, e in enumerate(events)])
    structured = [
        record(e, n, value=e.model_dump_json().encode(), **{"content-type": "application/cloudevents+json"})
        for n, e in enumerate(events)
    ]
    assert decode_facts(structured) == fast
    assert all(isinstance(f, Fact) for f in fast)


def test_bad_records_are_named_and_do_not_spoil_the_good_ones_of_their_batch() -> None:
    good = ev(BORROWED, 1, item_id="i", loan_id="l")
    bad_payload = ev(BORROWED, 2, item_id="i")  # no loan_id
    records = [record(good, 0), record(bad_payload, 1), record(good, 2, ce_time="yesterday"),
               record(good, 3, ce_library="Not A Code"), record(good, 4, ce_type="nl.bibliotheek.no.such.v1"),
               record(good, 5, value=b'{"item_id": "i", "loan_id": "l"'), record(good, 6, ce_subject=None)]  # fmt: skip
    decoded = decode_facts(records)
    assert isinstance(decoded[0], Fact) and decoded[0].offset == 0
    reasons = [str(d) for d in decoded[1:6] if isinstance(d, InvalidEvent)]
    assert len(reasons) == 5
    assert "data.loan_id" in reasons[0] and "ce_time" in reasons[1] and "ce_library" in reasons[2]
    assert "unknown event type" in reasons[3] and "not JSON" in reasons[4]
    assert decoded[6] is None  # about no member: no row


def test_bodies_that_only_join_into_valid_json_are_not_taken_for_each_other() -> None:
    # Alone, neither body is JSON; joined into one array they would read as one payload.
    left = record(ev(BORROWED, 1), 0, value=b'{"item_id": "i", "loan_id": "')
    right = record(ev(BORROWED, 2), 1, value=b'"}')
    assert all(isinstance(d, InvalidEvent) for d in decode_facts([left, right]))


# ------------------------------------------------------------------------------------ the decoder hook


class Metrics:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def consumed(self, topic: str, types: dict[str, int]) -> None:
        for kind, count in types.items():
            self.counts[(topic, kind)] = self.counts.get((topic, kind), 0) + count

    def handled(self, group: str, topic: str, seconds: float) -> None:
        pass


class Publisher:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.dead: list[tuple[int, str]] = []

    async def publish_dead_letter(self, *, topic: str, key: Any, value: Any, headers: dict[str, str]) -> None:
        self.dead.append((int(headers["dlq_offset"]), headers["dlq_reason"]))


def loop_with(decoder: Any, handler: Any, types: list[str] | None = None) -> tuple[_ConsumeLoop[Any], Publisher]:
    publisher = Publisher()
    settings = Settings(handler_retry_backoff_seconds=0.001)
    loop: _ConsumeLoop[Any] = _ConsumeLoop(settings, publisher, "g", [MEMBERS], handler, types, decoder)  # type: ignore[arg-type]
    return loop, publisher


def test_a_decoder_sees_only_wanted_types_and_its_invalid_records_are_dead_lettered_with_the_reason() -> None:
    seen: list[list[int]] = []
    batches: list[tuple[list[Fact], dict[tuple[str, int], int]]] = []

    def decoder(records: list[Any]) -> list[Fact | InvalidEvent | None]:
        seen.append([r.offset for r in records])
        return decode_facts(records)

    async def handler(batch: list[Fact], ends: dict[tuple[str, int], int]) -> None:
        batches.append((batch, ends))

    loop, publisher = loop_with(decoder, handler, [f"nl.bibliotheek.{BORROWED}"])
    good = ev(BORROWED, 1, item_id="i", loan_id="l")
    records = [record(good, 0), record(ev(SIGNED_UP, 2, **PROFILE), 1), record(ev(BORROWED, 3, item_id="i"), 2),
               record(good, 3, ce_subject=None)]  # fmt: skip
    asyncio.run(loop._handle(records))
    assert seen == [[0, 2, 3]]  # the sign-up was skipped by its header, undecoded
    [(batch, ends)] = batches
    assert [f.offset for f in batch] == [0]
    assert ends == {("t.identity.members.v1", 0): 3}  # commits go past skipped and dead-lettered records
    assert publisher.dead == [(2, "invalid_event")]
    assert publisher.metrics.counts == {("t.identity.members.v1", f"nl.bibliotheek.{BORROWED}"): 1}


def test_a_batch_that_fails_for_good_is_handled_again_one_record_at_a_time() -> None:
    calls: list[list[int]] = []

    async def handler(batch: list[Fact], ends: dict[tuple[str, int], int]) -> None:
        calls.append([f.offset for f in batch])
        if any(f.event_id == "e2" for f in batch):
            raise ValueError("cannot store this one")

    loop, publisher = loop_with(decode_facts, handler)
    records = [record(ev(BORROWED, n, item_id="i", loan_id="l"), n) for n in (1, 2, 3)]
    asyncio.run(loop._handle(records))
    assert calls == [[1, 2, 3], [1], [2], [3], []]
    assert publisher.dead == [(2, "handler_error")]
    assert publisher.metrics.counts == {("t.identity.members.v1", f"nl.bibliotheek.{BORROWED}"): 2}
