"""The local runtime's pure parts."""

from __future__ import annotations

import pytest

from deploy.cli import build_parser, traces_wanted
from deploy.platform import demo_environment
from deploy.runtime import ZipkinNode, _new_cluster_id


def test_a_cluster_id_never_starts_with_a_dash_which_the_storage_tool_would_take_for_an_option() -> None:
    # One in 64 random ids would start with '-'; a thousand draws would all but surely meet one.
    ids = [_new_cluster_id() for _ in range(1000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)


def test_the_local_run_starts_zipkin_unless_told_not_to_by_option_or_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    monkeypatch.delenv("KLANTREIS_LOCAL_TRACES", raising=False)
    assert traces_wanted(parser.parse_args(["up"])) is True
    assert traces_wanted(parser.parse_args(["run", "--no-traces"])) is False
    monkeypatch.setenv("KLANTREIS_LOCAL_TRACES", "false")
    assert traces_wanted(parser.parse_args(["up"])) is False


def test_services_of_the_local_run_send_every_trace_to_its_zipkin_and_what_the_user_set_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    zipkin = ZipkinNode(port=19411)
    env = demo_environment(zipkin)
    assert env["OTEL_TRACES_EXPORTER"] == "zipkin"
    assert env["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] == "http://127.0.0.1:19411/api/v2/spans"
    assert env["KLANTREIS_TRACE_VIEWER_URL"] == "http://127.0.0.1:19411/zipkin"
    assert "OTEL_TRACES_EXPORTER" not in demo_environment(None)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    assert demo_environment(zipkin)["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
