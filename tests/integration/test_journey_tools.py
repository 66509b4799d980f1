"""`klantreis simulate`, `replay` and `backtest` as a user runs them (`deploy.cli.main`), against the session's
real Kafka and Redis, with the services they talk to served over real HTTP on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy import runtime
from deploy.cli import main
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.journey.app import create_app as journey_app
from services.journey.offline.simulator import read_truth, simulate
from services.journey.settings import JourneySettings
from services.propositions.app import create_app as propositions_app
from shared.events import CloudEvent, to_structured
from shared.events.registry import TYPE_PREFIX
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import eventually, header, publish_as_harness, publish_seed_libraries, read_to_end, running

pytestmark = pytest.mark.integration

DESK = "desk-signup-never-online"


@pytest.fixture
def environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The command sees this test's broker, Redis and prefixes, as a user's KLANTREIS_* variables would say."""
    for name in ("kafka_bootstrap", "redis_url", "topic_prefix", "group_prefix", "key_prefix", "partitions"):
        monkeypatch.setenv(f"KLANTREIS_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.delenv("KLANTREIS_KEY", raising=False)
    return settings


async def klantreis(*argv: str) -> int:
    """The command line, in a thread of its own (it runs its own event loop), while services run in this one."""
    return await asyncio.to_thread(main, list(argv))


def table_rows(output: str, first_column: str = "rule") -> dict[str, list[str]]:
    """Rows of a printed table by rule: the numbers after the rule's name (and its `*` mark)."""
    rows: dict[str, list[str]] = {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column))
    for line in lines[start + 1 :]:
        cells = line.split()
        if not cells or not cells[-1][0].isdigit():
            if cells and cells[0][0].isalpha() and rows:
                break
            continue
        rows[cells[0]] = [c for c in cells[1:] if c != "*"]
    return rows


def number(text: str) -> int:
    return int(text.replace(",", ""))


# ------------------------------------------------------------------------------------------------ simulate


async def test_simulate_writes_the_history_and_the_planted_truth_to_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await klantreis("simulate", "--members", "400", "--seed", "3", "--to", "file", "--out", str(tmp_path)) == 0

    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    truth = read_truth(tmp_path / "truth.json")
    expected = simulate(400, seed=3)
    assert [e["id"] for e in events] == [e.id for e in expected.events]  # the seed decides the network
    assert {(p.rule, p.member_id, p.start_event_id) for p in truth} == {
        (p.rule, p.member_id, p.start_event_id) for p in expected.truth
    }
    starts = {e["id"]: e for e in events}
    assert all(starts[p.start_event_id]["subject"] == p.member_id for p in truth)
    assert all(e["specversion"] == "1.0" and e["type"].startswith(TYPE_PREFIX) for e in events)
    times = [datetime.fromisoformat(e["time"]) for e in events]
    assert times == sorted(times) and times[-1] < datetime.now(UTC) - timedelta(days=1)
    out = capsys.readouterr().out
    assert f"simulated 400 members (seed 3): {len(events):,} events, {len(truth):,} frictions planted" in out


async def test_simulate_to_kafka_with_check_prints_exact_precision_and_recall_per_rule(
    environment: Settings, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default quiet time (5 s): a topic quiet for that long follows the wall clock, so a history whose loading
    # pauses longer (a loaded machine between two chunks) would be taken for live traffic (docs/journey.md).
    journey = JourneySettings(**environment.model_dump(), journey_allowed_lateness=timedelta(minutes=1))
    async with runtime.serving(journey_app(journey)) as url:
        monkeypatch.setenv("KLANTREIS_JOURNEY_URL", url)
        monkeypatch.setenv("KLANTREIS_KEY", await make_key("operator"))
        code = await klantreis("simulate", "--members", "2000", "--seed", "12", "--check", "--timeout", "300")

    out = capsys.readouterr().out
    planted = simulate(2000, seed=12).planted_by_rule()
    rows = table_rows(out)
    assert code == 0, out
    assert {rule: number(cells[0]) for rule, cells in rows.items() if rule != "all"} == {
        rule: planted.get(rule, 0) for rule in rows if rule != "all"
    }
    assert rows["all"] == [f"{sum(planted.values()):,}", f"{sum(planted.values()):,}", "1.000", "1.000"]
    assert "detected exactly as planted" in out


async def test_the_journey_status_says_how_far_each_input_partition_got_to_operators_and_analysts_only(
    settings: Settings, make_key: MakeKey
) -> None:
    events = simulate(30, seed=2).events
    journey = JourneySettings(**settings.model_dump(), journey_idle_seconds=0.2)
    app = journey_app(journey)
    async with running(app) as client:
        await publish_as_harness(journey, events)

        async def settled() -> dict[str, Any] | None:
            response = await client.get("/v1/status", headers={"Authorization": f"Bearer {await make_key('analyst')}"})
            return response.json() if response.json()["settled"] else None

        status = await eventually(settled)
        refused = await client.get("/v1/status", headers={"Authorization": f"Bearer {await make_key('ingest')}"})
    assert status["caught_up"] and status["applied_events"] == len(events)
    assert sum(p["end_offset"] for p in status["partitions"]) == len(events)
    assert {p["topic"] for p in status["partitions"]} == {
        settings.topic("identity.members.v1"), settings.topic("propositions.usage.v1"),
        settings.topic("journey.forwards.v1"),  # merged-away members' events, re-keyed to the survivor
    }  # fmt: skip
    assert all(
        p["lag"] == 0 and p["applied_offset"] == p["end_offset"] - 1 for p in status["partitions"] if p["end_offset"]
    )
    assert refused.status_code == 403


async def test_a_missing_kafka_is_one_line_saying_what_to_start(
    environment: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KLANTREIS_KAFKA_BOOTSTRAP", f"127.0.0.1:{runtime.free_port()}")
    assert await klantreis("simulate", "--members", "10") == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("klantreis: Kafka at 127.0.0.1:") and "klantreis up" in error


# -------------------------------------------------------------------------------------------------- replay


def bad_loan(network_event: CloudEvent) -> str:
    body = to_structured(network_event) | {"id": str(uuid.uuid4())}
    return json.dumps(body | {"data": {**body["data"], "item_id": 5}})


async def test_replay_loads_the_valid_lines_and_sums_up_the_rejected_ones_by_reason_with_line_numbers(
    environment: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = simulate(80, seed=4).events
    loan = next(e for e in events if e.type.endswith("loan_borrowed.v1"))
    unknown = to_structured(events[0]) | {"id": "u1", "type": TYPE_PREFIX + "member.teleported.v1"}
    lines = [json.dumps(to_structured(e)) for e in events]
    # Bad lines at 3, 7, 12 and 15 (numbers count from 1, as an editor shows them).
    lines.insert(2, "{not json")
    lines.insert(6, json.dumps(unknown))
    lines.insert(11, bad_loan(loan))
    lines.insert(14, bad_loan(loan))
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(lines) + "\n")

    assert await klantreis("replay", str(history)) == 2  # some lines were rejected

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{len(events):,} events loaded into Kafka in ") and out[0].endswith("events/s")
    assert out[1] == "4 lines rejected:"
    assert out[2].split() == ["2", "x", "data.item_id:", "Input", "should", "be", "a", "valid", "string",
                              "(lines", "12,", "15)"]  # fmt: skip
    assert sorted(out[3:]) == sorted([
        "        1 x body: not JSON  (line 3)",
        f"        1 x type: unknown event type '{TYPE_PREFIX}member.teleported.v1'  (line 7)",
    ])  # fmt: skip
    landed = [
        record
        for topic in ("identity.members.v1", "propositions.usage.v1")
        for record in await read_to_end(environment.kafka_bootstrap, environment.topic(topic))
    ]
    assert sorted(header(r, "ce_id") or "" for r in landed) == sorted(e.id for e in events)


# ------------------------------------------------------------------------------------------------ backtest


def online_within(events: list[dict[str, Any]], days: int) -> set[str]:
    """Members who signed up offline and logged in online within `days` of it (what desk-signup-never-online
    looks for), straight from the history."""
    signed = {e["subject"]: datetime.fromisoformat(e["time"]) for e in events
              if e["type"].endswith("signed_up.v1") and e["channel"] == "offline"}  # fmt: skip
    return {
        e["subject"]
        for e in events
        if e["type"].endswith("login_succeeded.v1") and e["channel"] == "online" and e["subject"] in signed
        and signed[e["subject"]] < datetime.fromisoformat(e["time"]) <= signed[e["subject"]] + timedelta(days=days)
    }  # fmt: skip


async def test_backtesting_fourteen_instead_of_thirty_days_flags_who_the_history_says_and_publishes_nothing(
    environment: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await klantreis("simulate", "--members", "3000", "--seed", "9", "--to", "file", "--out", str(tmp_path)) == 0
    history = tmp_path / "history.jsonl"
    capsys.readouterr()

    assert await klantreis("backtest", "--history", str(history), "--window", f"{DESK}=P14D") == 0
    out = capsys.readouterr().out
    rows = table_rows(out)

    events = [json.loads(line) for line in history.read_text().splitlines()]
    planted = simulate(3000, seed=9).planted_by_rule()
    offline = {e["subject"] for e in events if e["type"].endswith("signed_up.v1") and e["channel"] == "offline"}
    flagged_at_14 = offline - online_within(events, 14)
    flagged_at_30 = offline - online_within(events, 30)
    assert len(flagged_at_30) == planted[DESK]
    in_force, candidate, only_candidate, only_in_force, _ = rows[DESK]
    assert [number(in_force), number(candidate), number(only_candidate), number(only_in_force)] == [
        planted[DESK], len(flagged_at_14), len(flagged_at_14 - flagged_at_30), 0,
    ]  # fmt: skip
    # Every other rule flags in both what was planted, and no member differs (the simulator plants no online
    # browsing, so the rule about proposition views flags no one).
    for rule, cells in rows.items():
        if rule != DESK:
            assert [number(c) for c in cells[:4]] == [planted.get(rule, 0), planted.get(rule, 0), 0, 0], rule
    assert f"  {DESK}: within P14D instead of P30D" in out

    # The same history on the platform's input topics gives the same back-test, and it published nothing.
    assert await klantreis("replay", str(history)) == 0
    capsys.readouterr()
    assert await klantreis("backtest", "--from-topics", "--window", f"{DESK}=P14D", "--members") == 0
    from_topics = capsys.readouterr().out
    assert table_rows(from_topics) == rows
    listed = from_topics[from_topics.index(f"{DESK}: {len(flagged_at_14 - flagged_at_30):,} members") :].splitlines()
    assert listed[0] == f"{DESK}: {len(flagged_at_14 - flagged_at_30):,} members flagged only by the candidate"
    assert {line.strip() for line in listed[1:]} == flagged_at_14 - flagged_at_30
    assert await read_to_end(environment.kafka_bootstrap, environment.topic("journey.frictions.v1")) == []


# ---------------------------------------------------------------------------------------------------- http


@contextlib.asynccontextmanager
async def doors(environment: Settings, monkeypatch: pytest.MonkeyPatch, admin_key: str) -> AsyncIterator[None]:
    """identity and propositions on free ports, the OBA in propositions' catalogue, the seed's libraries on the
    catalogue topic, and the command pointed at them."""
    async with (
        runtime.serving(identity_app(IdentitySettings(**environment.model_dump()))) as identity,
        runtime.serving(propositions_app(environment)) as propositions,
    ):
        async with httpx.AsyncClient(base_url=propositions, headers={"Authorization": f"Bearer {admin_key}"}) as http:
            oba = {
                "name": "OBA",
                "postcode_areas": ["1000-1109"],
                "branches": [{"code": "oosterdok", "name": "Oosterdok"}],
            }
            (await http.put("/v1/libraries/oba", json=oba)).raise_for_status()
        await publish_seed_libraries(environment)  # the simulated network's libraries, as identity checks them
        monkeypatch.setenv("KLANTREIS_IDENTITY_URL", identity)
        monkeypatch.setenv("KLANTREIS_PROPOSITIONS_URL", propositions)
        yield


async def test_simulate_over_http_signs_members_up_through_identity_keeping_their_ids(
    environment: Settings, monkeypatch: pytest.MonkeyPatch, admin_key: str, make_key: MakeKey,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    network = simulate(150, seed=5)
    async with doors(environment, monkeypatch, admin_key):
        code = await klantreis("simulate", "--members", "150", "--seed", "5", "--to", "http",
                               "--key", await make_key("ingest"))  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out

    def members_with(kind: str) -> set[str]:
        return {e.subject or "" for e in network.events if e.type.endswith(kind)}

    signed = members_with("signed_up.v1")
    offline = {e.subject for e in network.events if e.type.endswith("signed_up.v1") and e.channel == "offline"}
    assert "registrations: 150 accepted by identity POST /v1/events" in out
    assert f"sign-ups: {len(signed)} accepted by identity POST /v1/members" in out
    assert f"card activations at the desk: {len(offline)} accepted by identity POST /v1/events" in out
    records = await read_to_end(environment.kafka_bootstrap, environment.topic("identity.members.v1"))

    def published(kind: str) -> set[str]:
        return {header(r, "ce_subject") or "" for r in records if (header(r, "ce_type") or "").endswith(kind)}

    assert published("registration_started.v1") == {e.subject for e in network.events
                                                    if e.type.endswith("registration_started.v1")}  # fmt: skip
    assert published("signed_up.v1") == signed  # identity completed each registration under its id
    assert published("card_activated.v1") == offline
    # A member planted as a duplicate shares an e-mail address with another: identity suspects the pair by itself
    # (under whichever of the two signed up second).
    pairs = [{header(r, "ce_subject"), json.loads(r.value)["other_member_id"]} for r in records
             if (header(r, "ce_type") or "").endswith("duplicate_suspected.v1")]  # fmt: skip
    planted = members_with("duplicate_suspected.v1")
    assert planted and all(any(member in pair for pair in pairs) for member in planted)


async def test_replay_over_http_posts_through_the_ingest_endpoints_which_check_each_event(
    environment: Settings, monkeypatch: pytest.MonkeyPatch, admin_key: str, make_key: MakeKey, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    def loan(library: str) -> dict[str, Any]:
        return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": f"/libraries/{library}/desk",
                "type": TYPE_PREFIX + "usage.loan_borrowed.v1", "time": datetime.now(UTC).isoformat(),
                "subject": str(uuid.uuid4()), "library": library, "channel": "offline", "platform": "desk",
                "data": {"item_id": "9789021416011", "loan_id": f"L-{uuid.uuid4().hex[:8]}"}}  # fmt: skip

    loans = [loan("oba") for _ in range(3)]
    sign_up = loan("oba") | {"type": TYPE_PREFIX + "member.signed_up.v1",
                             "data": {"age_band": "18-64", "home_library": "oba", "postcode_area": "1034"}}  # fmt: skip
    lines = [json.dumps(loans[0]), json.dumps(loan("nowhere")), json.dumps(sign_up), "[1, 2",
             json.dumps(loans[1]), json.dumps(loans[2])]  # fmt: skip
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(lines) + "\n")

    async with doors(environment, monkeypatch, admin_key):
        code = await klantreis("replay", str(history), "--to", "http", "--key", await make_key("ingest"))
    out = capsys.readouterr().out.splitlines()
    assert code == 2
    assert out[0].startswith("3 events loaded into the ingest endpoints in ")
    assert out[1] == "3 lines rejected:"
    assert sorted(out[2:]) == sorted([
        "        1 x library: no such library  (line 2)",
        f"        1 x type: {TYPE_PREFIX}member.signed_up.v1 is published by identity itself  (line 3)",
        "        1 x body: not JSON  (line 4)",
    ])  # fmt: skip
    landed = await read_to_end(environment.kafka_bootstrap, environment.topic("propositions.usage.v1"))
    assert sorted(header(r, "ce_id") or "" for r in landed) == sorted(item["id"] for item in loans)
