"""Who may touch what (deploy/access.py), and docker-compose saying the same as the local run.

Kafka and Redis enforcing it is tested in tests/integration/test_least_privilege.py.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import access, runtime
from deploy.access import ADMIN, KAFKA_ACCESS, PLATFORM, PRINCIPALS, SERVICES, Acl, kafka_acls, redis_rules
from shared.settings import Settings
from shared.topics import ALL_TOPICS, MEMBERS, USAGE

ROOT = Path(__file__).resolve().parents[2]
PREFIXED = Settings(topic_prefix="p.", group_prefix="g.", key_prefix="k.")


def test_every_topic_has_a_writer_a_services_own_topics_only_it_and_platforms_only_member_and_usage_events() -> None:
    for topic in ALL_TOPICS:
        writers = [s for s in SERVICES if topic.name in {t.name for t in KAFKA_ACCESS[s].writes}]
        assert writers, f"no service may write {topic.name}: add it to the writes of its writers in deploy/access.py"
        owner = topic.name.split(".")[0]
        if owner in SERVICES:
            assert writers == [owner], (topic.name, writers)
    assert {t.name for t in KAFKA_ACCESS[PLATFORM].writes} == {MEMBERS.name, USAGE.name}
    assert not KAFKA_ACCESS[PLATFORM].consumes and not KAFKA_ACCESS[PLATFORM].reads
    assert ADMIN not in KAFKA_ACCESS  # a super user: no ACLs needed


def test_a_consumer_reads_its_topics_dead_letters_to_them_and_owns_its_groups_by_prefix() -> None:
    acls = kafka_acls("journey", PREFIXED)
    assert Acl("journey", "topic", "p.identity.members.v1", False, "read") in acls
    assert Acl("journey", "topic", "p.identity.members.v1.dlq", False, "write") in acls
    assert Acl("journey", "topic", "p.journey.frictions.v1", False, "write") in acls
    assert Acl("journey", "group", "g.journey", True, "read") in acls
    assert all(not acl.prefixed for acl in acls if acl.resource == "topic")
    assert {acl.name for acl in acls if acl.operation == "write"} == {
        "p.journey.frictions.v1", "p.journey.windows.v1", "p.journey.forwards.v1",
        "p.identity.members.v1.dlq", "p.propositions.usage.v1.dlq", "p.journey.forwards.v1.dlq",
    }  # fmt: skip


def test_a_service_user_on_redis_has_its_own_keys_the_shared_ones_and_the_api_keys_read_only() -> None:
    rules = redis_rules("journey", "secret", PREFIXED)
    assert rules[:3] == ["reset", "on", ">secret"]
    keys = [rule for rule in rules if "~" in rule]
    assert keys == ["~k.journey:*", "~k.idem:*", "~k.web:*", "%R~k.auth:*"]
    assert rules[rules.index("+@all") + 1] == "-@dangerous"  # every command but the dangerous ones
    # identity manages the libraries' publishable keys (the web tracker's); no other service writes under auth:.
    assert "~k.auth:publishable:*" in redis_rules("identity", "secret", PREFIXED)
    assert not any("publishable" in rule for rule in rules)


def test_local_credentials_are_made_once_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "credentials.json"
    made = access.local_credentials(path)
    assert set(made) == set(PRINCIPALS) and len(set(made.values())) == len(PRINCIPALS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert access.local_credentials(path) == made


def test_compose_passwords_come_from_one_variable_per_principal_or_the_local_file(tmp_path: Path) -> None:
    environ = {f"KLANTREIS_PASSWORD_{p.upper()}": f"pw-{p}" for p in PRINCIPALS}
    assert access.credentials_from(environ) == {p: f"pw-{p}" for p in PRINCIPALS}
    del environ["KLANTREIS_PASSWORD_JOURNEY"]
    with pytest.raises(runtime.RuntimeProblem, match="KLANTREIS_PASSWORD_JOURNEY"):
        access.credentials_from(environ)


def test_the_credentials_command_writes_an_env_file_for_compose_and_prints_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(access, "CREDENTIALS_FILE", tmp_path / "credentials.json")
    env_file = tmp_path / ".env"
    env_file.write_text("KLANTREIS_PASSWORD_ADMIN=old\nOTHER=kept\n")
    from deploy.cli import main

    assert main(["credentials", "--env-file", str(env_file)]) == 0
    credentials = access.local_credentials()
    lines = env_file.read_text().splitlines()
    assert "OTHER=kept" in lines and f"KLANTREIS_PASSWORD_ADMIN={credentials[ADMIN]}" in lines
    assert len([line for line in lines if line.startswith("KLANTREIS_PASSWORD_")]) == len(PRINCIPALS)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert not any(password in capsys.readouterr().out for password in credentials.values())


def _compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return parsed


def test_in_compose_every_service_signs_in_as_itself_and_waits_for_its_rights() -> None:
    compose = _compose()
    services = compose["services"]
    for name in SERVICES:
        environment = services[name]["environment"]
        assert environment["KLANTREIS_KAFKA_USERNAME"] == environment["KLANTREIS_REDIS_USERNAME"] == name
        variable = f"${{KLANTREIS_PASSWORD_{name.upper()}:-"
        assert environment["KLANTREIS_KAFKA_PASSWORD"].startswith(variable)
        assert environment["KLANTREIS_REDIS_PASSWORD"].startswith(variable)
        assert services[name]["depends_on"]["access"]["condition"] == "service_completed_successfully"
    assert services["access"]["command"] == ["python", "-m", "deploy", "access"]
    assert set(compose["x-klantreis-passwords"]) == {f"KLANTREIS_PASSWORD_{p.upper()}" for p in PRINCIPALS}
    for job in ("topics", "access"):
        assert services[job]["environment"]["KLANTREIS_KAFKA_USERNAME"] == ADMIN
    assert "user default off" in " ".join(services["redis"]["command"])


def test_compose_kafka_has_the_local_runs_security_settings_and_a_scram_user_per_principal() -> None:
    script = (ROOT / "deploy" / "kafka" / "compose-start.sh").read_text()
    settings = dict(re.findall(r"^([a-z][a-z0-9._-]+)=(.*)$", script, re.MULTILINE))
    local = runtime._sasl_properties(9092, 9093, ADMIN, "secret")
    # Addresses differ (container names, a listener for the host) and passwords come from the environment.
    for key, value in local.items():
        if key.endswith(("listeners", "jaas.config")):
            assert key in settings, key
        elif key == "listener.security.protocol.map":
            assert set(value.split(",")) < set(settings[key].split(","))
        else:
            assert settings[key] == value, key
    [principals] = re.findall(r"^for principal in (.*); do$", script, re.MULTILINE)
    assert principals.split() == list(PRINCIPALS)
    assert _compose()["services"]["kafka"]["entrypoint"] == ["sh", "/klantreis/compose-start.sh"]


def _apps(tmp_path: Path) -> dict[str, Any]:
    from services.analytics.app import create_app as analytics
    from services.analytics.settings import AnalyticsSettings
    from services.identity.app import create_app as identity
    from services.identity.settings import IdentitySettings
    from services.journey.app import create_app as journey
    from services.journey.settings import JourneySettings
    from services.notifications.app import create_app as notifications
    from services.propositions.app import create_app as propositions

    fields = PREFIXED.model_dump()
    return {
        "identity": identity(IdentitySettings(**fields)),
        "propositions": propositions(PREFIXED),
        "journey": journey(JourneySettings(**fields)),
        "notifications": notifications(PREFIXED),
        "analytics": analytics(AnalyticsSettings(**fields, analytics_path=tmp_path / "analytics")),
    }


def test_every_service_is_granted_what_its_subscribers_and_publishers_use(tmp_path: Path) -> None:
    """Building each app (nothing connects): a subscriber or publisher added without its right fails here."""
    from services.journey.handlers import INPUTS as JOURNEY_INPUTS

    for name, app in _apps(tmp_path).items():
        access_of = KAFKA_ACCESS[name]
        consumed = {PREFIXED.topic(t.name) for t in access_of.consumes}
        written = {PREFIXED.topic(t.name) for t in access_of.writes}
        groups = tuple(PREFIXED.group(g) for g in access_of.groups)
        broker = app.state.parts.broker
        for subscriber in broker.subscribers:
            assert set(subscriber.topic_names) <= consumed, (name, subscriber.topic_names)
            assert subscriber.group_id.startswith(groups), (name, subscriber.group_id)
        for publisher in broker.publishers:
            assert publisher.topic in written, (name, publisher.topic)
    # journey consumes with a consumer of its own (ownership by partition across topics), in group `journey`.
    assert set(JOURNEY_INPUTS) <= set(KAFKA_ACCESS["journey"].consumes)


def test_kafka_data_made_with_other_users_is_refused_and_data_made_before_users_is_told_apart(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    (data / "log").mkdir(parents=True)
    (data / "log" / "meta.properties").write_text("formatted\n")
    assert runtime.KafkaNode.plaintext_data(data)  # made before SCRAM users: the local run keeps it plaintext
    (data / "scram-users").write_text("admin\nidentity\n")
    assert not runtime.KafkaNode.plaintext_data(data)
    node = runtime.KafkaNode(
        data_dir=data, port=runtime.free_port(), controller_port=runtime.free_port(), scram_users={"admin": "a"}
    )
    with pytest.raises(runtime.RuntimeProblem, match="formatted with other SCRAM users"):
        node.start(detach=False)
    assert not node.running()
