"""Kafka records to rows, fast and in batches (`shared.kafka`'s decoder hook): only what a row keeps is read, and
only records laid out exactly as the platform writes them are read the fast way, their attributes by
`shared.events.fast_read` (headers by position, what records share checked once per distinct value). The payloads are
validated with their type's model, all records of one type in one call (`payloads_of`). Anything unusual — another
layout, structured mode, a value that does not pass — goes the reference way (`shared.events.from_kafka`,
`typed_data`), which either accepts it or names the field, as every other consumer does; the consume loop
dead-letters it with that reason. The fast way only accepts what the reference way accepts, with the same values
(tests/unit/test_analytics_decoding.py holds the two equal).

An event about no member (no subject) has no row: it is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.analytics.facts import Fact, envelope_of, epoch_ms, fact, row_maker
from shared.events import CloudEvent, InvalidEvent, from_kafka, typed_data
from shared.events.fast_read import Attributes, attributes
from shared.events.registry import event_types, payloads_of

Decoded = Fact | InvalidEvent | None


def decode_facts(records: Sequence[Any]) -> list[Decoded]:
    """Each record's row, an InvalidEvent (for the dead-letter topic) or None (no member), in the batch's order."""
    results: list[Decoded] = [None] * len(records)
    by_type: dict[str, list[tuple[int, Attributes]]] = {}
    for at, record in enumerate(records):
        checked = _checked(record)
        if checked is None:
            results[at] = _reference(record)
        else:
            by_type.setdefault(checked.type, []).append((at, checked))
    kinds = event_types()
    for kind, members in by_type.items():
        payloads = payloads_of(kind, [records[at].value for at, _ in members])
        if payloads is None:  # one of them is bad: each the reference way, so the good ones go on
            for at, _ in members:
                results[at] = _reference(records[at])
            continue
        make = row_maker(kind, kinds[kind])
        attributes_and_payloads = zip(members, payloads, strict=True)
        for (at, (_, event_id, time, subject, library, channel, platform, _)), data in attributes_and_payloads:
            record = records[at]
            results[at] = make(event_id, subject, epoch_ms(time), library, channel, platform, data, record.topic,
                               record.partition, record.offset)  # fmt: skip
    return results


def _checked(record: Any) -> Attributes | None:
    """The attributes of a record with a value, read the fast way (`shared.events.fast_read`)."""
    return attributes(record.headers) if record.value else None


def _reference(record: Any) -> Decoded:
    try:
        event: CloudEvent = from_kafka(record.value, record.headers)
        data = typed_data(event)
    except InvalidEvent as invalid:
        return invalid
    envelope = envelope_of(event)
    return None if envelope is None else fact(envelope, data, record.topic, record.partition, record.offset)
