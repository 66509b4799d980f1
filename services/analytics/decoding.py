"""Kafka records to rows, fast and in batches (`shared.kafka`'s decoder hook): only what a row keeps is read, and
only records laid out exactly as the platform writes them are read the fast way. Their headers are read by
position (`_LAYOUTS`; headers after them that the reference way does not read either, a trace context, are left
aside); what a batch's records share — content type, spec version, source, type, library, channel,
platform — is checked once per distinct value (`_shared`), with the CloudEvent model's own constraints; id, time and
subject, which differ per record, with exact checks equivalent to the model's (`_checked`). The payloads are
validated with their type's model, all records of one type in one call (`payloads_of`). Anything unusual — another
layout, structured mode, a value that does not pass — goes the reference way (`shared.events.from_kafka`,
`typed_data`), which either accepts it or names the field, as every other consumer does; the consume loop
dead-letters it with that reason. The fast way only accepts what the reference way accepts, with the same values
(tests/unit/test_analytics_decoding.py holds the two equal).

An event about no member (no subject) has no row: it is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, get_args

from annotated_types import MaxLen
from pydantic import StringConstraints

from services.analytics.facts import Fact, envelope_of, epoch_ms, fact, row_maker
from shared.events import CloudEvent, InvalidEvent, from_kafka, typed_data
from shared.events.registry import event_types, payloads_of
from shared.events.types import Channel, LibraryCode, Platform

Decoded = Fact | InvalidEvent | None

# The header names of a record as the platform writes it (`shared.events.binary_headers`), in its order: a layout
# is one of these exactly, each name once; the value is where library, channel and platform are (None: absent).
_FIRST = ("content-type", "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject")
_PLACES = ("ce_library", "ce_channel", "ce_platform")
_LAYOUTS: dict[tuple[str, ...], tuple[int | None, ...]] = {}
for _mask in range(8):
    _present = [name for bit, name in enumerate(_PLACES) if _mask >> bit & 1]
    _LAYOUTS[(*_FIRST, *_present)] = tuple(
        len(_FIRST) + _present.index(name) if name in _present else None for name in _PLACES
    )


def _pattern(kind: Any) -> re.Pattern[str]:
    """A constrained string type's pattern (`shared.events.types`) for Python's re: `\\Z` for the model's `$` (Rust
    regex), which matches only at the very end."""
    [constraints] = [c for c in get_args(kind)[1:] if isinstance(c, StringConstraints)]
    return re.compile(str(constraints.pattern).removesuffix("$") + r"\Z")


def _max_length(attribute: str) -> int:
    """The CloudEvent model's longest value of a text attribute (its minimum is 1 for each one read here)."""
    return next(c.max_length for c in CloudEvent.model_fields[attribute].metadata if isinstance(c, MaxLen))


# The CloudEvent model's own constraints, read from it, not written again.
_LIBRARY = _pattern(LibraryCode)
_PLATFORM = _pattern(Platform)
_CHANNELS = frozenset(get_args(Channel))
_ID_LENGTH, _SUBJECT_LENGTH, _SOURCE_LENGTH = map(_max_length, ("id", "subject", "source"))
# The times the platform writes (RFC 3339 with an offset); others, naive ones included, go the reference way.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
                   r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])\Z")  # fmt: skip

# What records share, checked: (type, library, channel, platform), or () when it is not all valid.
Shared = tuple[str, str | None, str | None, str | None] | tuple[()]
_SHARED: dict[tuple[Any, ...], Shared] = {}
_PER_RECORD = ("ce_id", "ce_time", "ce_subject")


def decode_facts(records: Sequence[Any]) -> list[Decoded]:
    """Each record's row, an InvalidEvent (for the dead-letter topic) or None (no member), in the batch's order."""
    results: list[Decoded] = [None] * len(records)
    by_type: dict[str, list[tuple[int, tuple[Any, ...]]]] = {}
    for at, record in enumerate(records):
        checked = _checked(record)
        if checked is None:
            results[at] = _reference(record)
        else:
            by_type.setdefault(checked[0], []).append((at, checked))
    kinds = event_types()
    for kind, members in by_type.items():
        payloads = payloads_of(kind, [records[at].value for at, _ in members])
        if payloads is None:  # one of them is bad: each the reference way, so the good ones go on
            for at, _ in members:
                results[at] = _reference(records[at])
            continue
        make = row_maker(kind, kinds[kind])
        for (at, (_, event_id, time, subject, library, channel, platform)), data in zip(members, payloads, strict=True):
            record = records[at]
            results[at] = make(event_id, subject, time, library, channel, platform, data, record.topic,
                               record.partition, record.offset)  # fmt: skip
    return results


def _checked(record: Any) -> tuple[Any, ...] | None:
    """(type, id, time, subject, library, channel, platform) of a record of the platform's layout whose attributes
    are all valid; None for any other (the reference way says what is wrong, if anything)."""
    headers = record.headers
    try:
        # Headers after the event's own that are no attribute (a trace context: `traceparent`, `correlation_id`):
        # every record published in a request's span has them, and the reference way ignores them too.
        end = len(headers)
        while end > len(_FIRST) and not _read_by_reference(headers[end - 1][0]):
            end -= 1
        # By position, without a dict or a list of names per record: id, time and subject differ per record; the
        # other headers, names and values, are what records share (`_SHARED`'s key).
        (id_name, raw_id), (time_name, raw_time), (subject_name, raw_subject) = headers[2], headers[5], headers[6]
        key = (headers[0], headers[1], headers[3], headers[4], headers[7:end])
        shared = _SHARED.get(key)
    except (IndexError, KeyError, TypeError, ValueError):  # fewer headers, not pairs, not a sequence
        return None
    if shared is None:
        shared = _shared(headers[:end])
        if len(_SHARED) > 4096:  # only a bound: a batch's records share a few dozen at most
            _SHARED.clear()
        _SHARED[key] = shared
    if not shared or not record.value or (id_name, time_name, subject_name) != _PER_RECORD:
        return None
    try:
        event_id, time, subject = raw_id.decode(), raw_time.decode(), raw_subject.decode()
    except (UnicodeDecodeError, AttributeError):
        return None
    if not (0 < len(event_id) <= _ID_LENGTH and 0 < len(subject) <= _SUBJECT_LENGTH and _TIME.match(time)):
        return None
    try:
        instant = epoch_ms(datetime.fromisoformat(time))
    except ValueError:  # a day that does not exist (31 April)
        return None
    return shared[0], event_id, instant, subject, *shared[1:]


def _read_by_reference(name: str) -> bool:
    """Whether the reference way reads a header of this name (`from_kafka`: the `ce_` ones and the content type)."""
    return name.startswith("ce_") or name.lower() == "content-type"


def _shared(headers: Sequence[tuple[str, Any]]) -> Shared:
    try:
        names, values = zip(*headers, strict=True)
    except (TypeError, ValueError):  # not all pairs
        return ()
    places = _LAYOUTS.get(names)
    if places is None or values[0] != b"application/json" or values[1] != b"1.0":
        return ()
    try:
        source, kind = values[3].decode(), values[4].decode()
        library, channel, platform = (None if at is None else values[at].decode() for at in places)
    except (UnicodeDecodeError, AttributeError):
        return ()
    if not 0 < len(source) <= _SOURCE_LENGTH or kind not in event_types():
        return ()
    if library is not None and not _LIBRARY.match(library):
        return ()
    if (channel is not None and channel not in _CHANNELS) or (platform is not None and not _PLATFORM.match(platform)):
        return ()
    return kind, library, channel, platform


def _reference(record: Any) -> Decoded:
    try:
        event: CloudEvent = from_kafka(record.value, record.headers)
        data = typed_data(event)
    except InvalidEvent as invalid:
        return invalid
    envelope = envelope_of(event)
    return None if envelope is None else fact(envelope, data, record.topic, record.partition, record.offset)
