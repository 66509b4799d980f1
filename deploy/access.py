"""Least privilege on Kafka and Redis: who may touch what (docs/security.md, "Least privilege").

Every service signs in to Kafka as a principal of its own (SASL/SCRAM-SHA-512) and to Redis as an ACL user of its
own. Kafka's standard authorizer lets a service write only its own topics, read only what it consumes, and use only
its own consumer groups; Redis lets it touch only keys under its own prefix (plus the shared ones named below).
A library platform that produces straight to Kafka (kcat style) signs in as ``platform`` and may write only the
topics DESIGN §1 lets platforms write: member events and usage. ``admin`` is the operators' and tools' super user.

This module says what each principal may do (data, unit-tested) and applies it: Kafka ACLs through the admin
protocol, Redis users through ``ACL SETUSER``. Credentials for the local run are generated into
``.klantreis/credentials.json`` (0600) and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, Literal, cast

from aiokafka.errors import KafkaError
from pydantic import SecretStr
from redis.exceptions import RedisError

from deploy.commands import command, say
from deploy.runtime import STATE_DIR, KafkaNode, RedisNode, RuntimeProblem, read_record
from shared.settings import Settings
from shared.topics import (
    AUDIT,
    CAMPAIGNS,
    CATALOG,
    DELIVERIES,
    FAILED_INGEST,
    FORWARDS,
    FRICTIONS,
    MEMBERS,
    USAGE,
    WINDOWS,
    Topic,
)

ADMIN: Final = "admin"
PLATFORM: Final = "platform"
SERVICES: Final = ("identity", "propositions", "journey", "notifications", "analytics")
PRINCIPALS: Final = (ADMIN, *SERVICES, PLATFORM)


@dataclass(frozen=True)
class KafkaAccess:
    """What one principal may do on Kafka. ``consumes``: read in a consumer group, and dead-letter to
    ``<topic>.dlq``; ``reads``: read without a group (a topic replayed from its start, end offsets);
    ``groups``: consumer group names it owns, each a prefix (``notifications`` covers ``notifications.members``)."""

    writes: tuple[Topic, ...] = ()
    consumes: tuple[Topic, ...] = ()
    reads: tuple[Topic, ...] = ()
    groups: tuple[str, ...] = ()


# Who writes and reads which topic: DESIGN §3, and each service's app.py and handlers.py.
KAFKA_ACCESS: Final[Mapping[str, KafkaAccess]] = {
    # The library directory (shared.libraries) reads the catalogue's library_changed records.
    "identity": KafkaAccess(writes=(MEMBERS, FAILED_INGEST), reads=(CATALOG,)),
    "propositions": KafkaAccess(
        writes=(CATALOG, USAGE, AUDIT, FAILED_INGEST), consumes=(MEMBERS,), groups=("propositions",)
    ),
    # journey reads its own derived topics back when a partition changes owner (handlers.py: what Kafka has already).
    "journey": KafkaAccess(
        writes=(FRICTIONS, WINDOWS, FORWARDS),
        consumes=(MEMBERS, USAGE, FORWARDS),
        reads=(FRICTIONS, WINDOWS, FORWARDS),
        groups=("journey",),
    ),
    # notifications dead-letters a delivery it cannot make on its own topic's dead letters.
    "notifications": KafkaAccess(
        writes=(DELIVERIES, CAMPAIGNS, Topic(DELIVERIES.dead_letters), AUDIT),
        consumes=(MEMBERS, FRICTIONS, USAGE, CATALOG),
        reads=(MEMBERS, CATALOG),
        groups=("notifications",),
    ),
    "analytics": KafkaAccess(consumes=(MEMBERS, USAGE, FRICTIONS, DELIVERIES), reads=(CATALOG,), groups=("analytics",)),
    # A library platform's direct producer: what members do on its platform (DESIGN §1), nothing else.
    PLATFORM: KafkaAccess(writes=(MEMBERS, USAGE)),
}

# Redis keys every service shares: API keys (read only: the `keys` command manages them as admin), idempotency
# records of write routes and signed-in page sessions.
SHARED_KEYS_READ: Final = ("auth",)
SHARED_KEYS: Final = ("idem", "web")
# Keys a service writes outside its own prefix: identity manages the libraries' publishable keys (web tracker).
EXTRA_KEYS: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = {"identity": (("auth", "publishable"),)}


class _Resource(IntEnum):
    TOPIC = 2
    GROUP = 3


class _Pattern(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class _Operation(IntEnum):
    READ = 3
    WRITE = 4


_ALLOW: Final = 3


@dataclass(frozen=True, order=True)
class Acl:
    """One Kafka ACL binding: ``principal`` may ``operation`` on the resource, from any host."""

    principal: str
    resource: Literal["topic", "group"]
    name: str
    prefixed: bool
    operation: Literal["read", "write"]


def kafka_acls(principal: str, settings: Settings) -> list[Acl]:
    """The ACLs of ``principal`` for the platform named by ``settings``' topic and group prefixes."""
    access = KAFKA_ACCESS[principal]
    acls = {Acl(principal, "topic", settings.topic(t.name), False, "write") for t in access.writes}
    for topic in (*access.consumes, *access.reads):
        acls.add(Acl(principal, "topic", settings.topic(topic.name), False, "read"))
    acls |= {Acl(principal, "topic", settings.topic(t.dead_letters), False, "write") for t in access.consumes}
    acls |= {Acl(principal, "group", settings.group(g), True, "read") for g in access.groups}
    return sorted(acls)


def redis_key_patterns(service: str, settings: Settings) -> list[str]:
    """The ``ACL SETUSER`` key patterns of a service on the platform ``settings`` name (its key prefix): its own
    keys, the shared ones, the API keys read only."""
    own = [f"~{settings.key(service)}:*", *(f"~{settings.key(name)}:*" for name in SHARED_KEYS)]
    own += [f"~{settings.key(*parts)}:*" for parts in EXTRA_KEYS.get(service, ())]
    return [*own, *(f"%R~{settings.key(name)}:*" for name in SHARED_KEYS_READ)]


def redis_user_rules(password: str) -> list[str]:
    """``ACL SETUSER`` rules of any service's user without its keys: signed in with ``password``, every command but
    the dangerous ones (scripts included: the stores' Lua scripts are checked against the key patterns)."""
    return ["reset", "on", f">{password}", "resetchannels", "+@all", "-@dangerous"]


def redis_rules(service: str, password: str, settings: Settings) -> list[str]:
    """``ACL SETUSER`` rules of a service: its user's rules and its key patterns."""
    return [*redis_user_rules(password), *redis_key_patterns(service, settings)]


async def grant_kafka(admin_settings: Settings, acls: Iterable[Acl]) -> None:
    """Create ``acls`` (creating one that exists changes nothing) as the super user of ``admin_settings``."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import CreateAclsRequest

    admin = AIOKafkaAdminClient(
        bootstrap_servers=admin_settings.kafka_bootstrap,
        client_id="klantreis-access",
        **admin_settings.kafka_security(),
    )
    await admin.start()
    try:

        async def create(acl: Acl) -> None:
            # aiokafka's admin client has no ACL call; the protocol request is there (one binding per request).
            request = CreateAclsRequest(
                _Resource[acl.resource.upper()],
                acl.name,
                _Pattern.PREFIXED if acl.prefixed else _Pattern.LITERAL,
                f"User:{acl.principal}",
                "*",
                _Operation[acl.operation.upper()],
                _ALLOW,
            )
            response: Any = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code != 0:
                    raise RuntimeError(f"cannot create the ACL {acl}: error {code} {message or ''}")

        await asyncio.gather(*(create(acl) for acl in acls))
    finally:
        await admin.close()


async def grant_redis(admin_settings: Settings, users: Mapping[str, str], settings: Settings) -> None:
    """Add (or reset) the Redis ACL user of each service in ``users`` (name → password), as the admin user of
    ``admin_settings``; key patterns from ``settings``' key prefix."""
    from shared.redis import make_redis

    redis = make_redis(admin_settings)
    try:
        for service, password in users.items():
            rules = redis_rules(service, password, settings)
            await cast(Any, redis.execute_command)("ACL", "SETUSER", service, *rules)
        # Into Redis's ACL file, so that a restarted Redis knows them (each server here is started with one).
        await cast(Any, redis.execute_command)("ACL", "SAVE")
    finally:
        await redis.aclose()


async def grant(admin_settings: Settings, credentials: Mapping[str, str], settings: Settings) -> None:
    """Every principal's ACLs on Kafka and every service's user on Redis, for the platform ``settings`` name."""
    await grant_kafka(admin_settings, [acl for name in KAFKA_ACCESS for acl in kafka_acls(name, settings)])
    await grant_redis(admin_settings, {s: credentials[s] for s in SERVICES}, settings)


# ------------------------------------------------------------------------------------ the local run

CREDENTIALS_FILE: Final = STATE_DIR / "credentials.json"


def new_credentials() -> dict[str, str]:
    """A password for every principal (URL-safe: safe inside Kafka's JAAS line and Redis's ACL rules)."""
    return {name: secrets.token_urlsafe(24) for name in PRINCIPALS}


def local_credentials(path: Path | None = None) -> dict[str, str]:
    """The local run's credentials, made on first use and kept in ``path`` (default ``.klantreis/credentials.json``,
    readable by its owner only)."""
    path = path if path is not None else CREDENTIALS_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and set(PRINCIPALS) <= set(stored):
            return {str(k): str(v) for k, v in stored.items()}
    credentials = new_credentials()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials, handle)
    path.chmod(0o600)
    return credentials


def kafka_environment(principal: str, credentials: Mapping[str, str]) -> dict[str, str]:
    """The settings (``KLANTREIS_*`` variables) that make a process sign in to Kafka as ``principal``."""
    return {"KLANTREIS_KAFKA_USERNAME": principal, "KLANTREIS_KAFKA_PASSWORD": credentials[principal]}


def redis_environment(user: str, credentials: Mapping[str, str]) -> dict[str, str]:
    """The settings that make a process sign in to Redis as ``user``."""
    return {"KLANTREIS_REDIS_USERNAME": user, "KLANTREIS_REDIS_PASSWORD": credentials[user]}


def service_environments(kafka: KafkaNode, redis: RedisNode) -> dict[str, dict[str, str]]:
    """Who each service of the local run signs in as (nothing where the server runs without users)."""
    credentials = local_credentials()
    return {
        service: {
            **(kafka_environment(service, credentials) if kafka.scram_users else {}),
            **(redis_environment(service, credentials) if redis.admin_password else {}),
        }
        for service in SERVICES
    }


def sign_in_as_admin(environ: MutableMapping[str, str]) -> None:
    """Make the ``klantreis`` tools of this process sign in as admin on the local runtime `up` started, when
    they talk to it and were not told otherwise (``KLANTREIS_KAFKA_USERNAME`` / ``KLANTREIS_REDIS_USERNAME``)."""
    if not CREDENTIALS_FILE.is_file():
        return
    defaults = Settings.model_construct()
    kafka, redis = read_record("kafka"), read_record("redis")
    bootstrap = environ.get("KLANTREIS_KAFKA_BOOTSTRAP", defaults.kafka_bootstrap)
    if kafka is not None and kafka.address == bootstrap and (STATE_DIR / "kafka" / "scram-users").is_file():
        for name, value in kafka_environment(ADMIN, local_credentials()).items():
            environ.setdefault(name, value)
    redis_url = environ.get("KLANTREIS_REDIS_URL", defaults.redis_url)
    if redis is not None and f"//{redis.address}/" in redis_url and (STATE_DIR / "redis" / "users.acl").is_file():
        for name, value in redis_environment(ADMIN, local_credentials()).items():
            environ.setdefault(name, value)


def secure_local_runtime(kafka: KafkaNode, redis: RedisNode) -> None:
    """Sign this process in as admin on the local runtime just started (or found running) and give every
    principal its ACLs and every service its Redis user (idempotent: on every start)."""
    credentials = local_credentials()
    if kafka.scram_users:
        for name, value in kafka_environment(ADMIN, credentials).items():
            os.environ.setdefault(name, value)
    if redis.admin_password:
        for name, value in redis_environment(ADMIN, credentials).items():
            os.environ.setdefault(name, value)
    settings = Settings(kafka_bootstrap=kafka.bootstrap, redis_url=redis.url)
    try:
        if kafka.scram_users:
            asyncio.run(grant_kafka(settings, [acl for name in KAFKA_ACCESS for acl in kafka_acls(name, settings)]))
        if redis.admin_password:
            asyncio.run(grant_redis(settings, {s: credentials[s] for s in SERVICES}, settings))
    except Exception as exc:
        raise RuntimeProblem(f"cannot give the services their rights: {type(exc).__name__}: {exc}") from None


def signed_in(settings: Settings, principal: str, credentials: Mapping[str, str]) -> Settings:
    """``settings`` signed in as ``principal`` on Kafka, and on Redis unless it is the platform (no Redis user)."""
    password = SecretStr(credentials[principal])
    redis = {"redis_username": principal, "redis_password": password} if principal != PLATFORM else {}
    return settings.model_copy(update={"kafka_username": principal, "kafka_password": password, **redis})


def credentials_from(environ: Mapping[str, str]) -> dict[str, str]:
    """Every principal's password from ``KLANTREIS_PASSWORD_<PRINCIPAL>`` (docker-compose, production), else the
    local run's (``.klantreis/credentials.json``)."""
    named = {name: environ.get(f"KLANTREIS_PASSWORD_{name.upper()}", "") for name in PRINCIPALS}
    if all(named.values()):
        return named
    if any(named.values()):
        missing = ", ".join(f"KLANTREIS_PASSWORD_{n.upper()}" for n, v in named.items() if not v)
        raise RuntimeProblem(f"set every principal's password, or none: {missing} missing")
    return local_credentials()


@command(
    "access",
    "give every principal its Kafka ACLs and every service its Redis user, as admin (idempotent); passwords from "
    "KLANTREIS_PASSWORD_<PRINCIPAL> or .klantreis/credentials.json",
)
def cmd_access(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.kafka_username or not settings.redis_username:
        raise RuntimeProblem(
            "sign in as admin: set KLANTREIS_KAFKA_USERNAME/PASSWORD and KLANTREIS_REDIS_USERNAME/PASSWORD"
        )
    try:
        asyncio.run(grant(settings, credentials_from(os.environ), settings))
    except (OSError, KafkaError, RedisError, RuntimeError) as exc:
        raise RuntimeProblem(f"cannot give the principals their rights: {type(exc).__name__}: {exc}") from None
    say(f"rights given to {', '.join(p for p in PRINCIPALS if p != ADMIN)} (Kafka ACLs; Redis users of the services)")
    return 0


def _credentials_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-file", type=Path, required=True, help="where to write them, e.g. .env for compose")


@command(
    "credentials",
    "write the local run's passwords (made on first use) as KLANTREIS_PASSWORD_<PRINCIPAL> lines into a file "
    "readable by its owner only, e.g. the .env docker-compose reads; nothing is printed",
    _credentials_arguments,
)
def cmd_credentials(args: argparse.Namespace) -> int:
    credentials = local_credentials()
    lines = "".join(f"KLANTREIS_PASSWORD_{name.upper()}={credentials[name]}\n" for name in PRINCIPALS)
    path: Path = args.env_file
    existing = path.read_text() if path.is_file() else ""
    kept = "".join(line + "\n" for line in existing.splitlines() if not line.startswith("KLANTREIS_PASSWORD_"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(kept + lines)
    path.chmod(0o600)
    say(f"wrote the passwords of {len(PRINCIPALS)} principals into {path}")
    return 0
