"""A record's CloudEvent attributes read fast, for consumers of tens of thousands of records a second (analytics'
ingest, journey): only records laid out exactly as the platform writes them (`shared.events.binary_headers`) are
read this way. Their headers are read by position (`_LAYOUTS`; headers after them that the reference way does not
read either, a trace context, are left aside); what a batch's records share — content type, spec version, source,
type, library, channel, platform — is checked once per distinct value (`_shared`), with the CloudEvent model's own
constraints; id, time and subject, which differ per record, with exact checks equivalent to the model's. Anything
unusual — another layout, structured mode, a value that does not pass — is None: the reference way
(`shared.events.from_kafka`) either accepts it or names the field. This way accepts only what the reference way
accepts, with the same values (tests/unit/test_analytics_decoding.py, tests/unit/test_journey_decoding.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, get_args

from annotated_types import MaxLen
from pydantic import StringConstraints

from shared.events.envelope import CloudEvent
from shared.events.registry import event_types
from shared.events.types import Channel, LibraryCode, Platform


class Attributes(NamedTuple):
    type: str  # the whole type, `nl.bibliotheek.` included
    id: str
    time: datetime  # with its offset, as written
    subject: str
    library: str | None
    channel: str | None
    platform: str | None
    read: int  # how many of the record's headers are attributes: those after them are not (a trace context)


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
_new = tuple.__new__  # a named tuple made without its Python-level constructor: once per record


def attributes(headers: Sequence[tuple[str, bytes]]) -> Attributes | None:
    """The attributes of a record in the platform's binary layout whose attributes are all valid; None for any other
    (the reference way, `from_kafka`, says what is wrong, if anything)."""
    try:
        # Headers after the event's own that are no attribute (a trace context: `traceparent`, `correlation_id`):
        # every record published in a request's span has them, and the reference way ignores them too.
        end = len(headers)
        while end > len(_FIRST) and not _read_by_reference(headers[end - 1][0]):
            end -= 1
        # By position, without a dict or a list of names per record: id, time and subject differ per record; the
        # other headers, names and values, are what records share (`_SHARED`'s key).
        (id_name, raw_id), (time_name, raw_time), (subject_name, raw_subject) = headers[2], headers[5], headers[6]
        key = (headers[0], headers[1], headers[3], headers[4], *headers[7:end])
        shared = _SHARED.get(key)
    except (IndexError, KeyError, TypeError, ValueError):  # fewer headers, not pairs, not a sequence
        return None
    if shared is None:
        shared = _shared(headers[:end])
        if len(_SHARED) > 4096:  # only a bound: a batch's records share a few dozen at most
            _SHARED.clear()
        _SHARED[key] = shared
    if not shared or (id_name, time_name, subject_name) != _PER_RECORD:
        return None
    try:
        event_id, time, subject = raw_id.decode(), raw_time.decode(), raw_subject.decode()
    except (UnicodeDecodeError, AttributeError):
        return None
    if not (0 < len(event_id) <= _ID_LENGTH and 0 < len(subject) <= _SUBJECT_LENGTH and _TIME.match(time)):
        return None
    try:
        moment = datetime.fromisoformat(time)
    except ValueError:  # a day that does not exist (31 April)
        return None
    return _new(Attributes, (shared[0], event_id, moment, subject, *shared[1:], end))


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
