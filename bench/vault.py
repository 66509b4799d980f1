"""What crypto-shredding costs identity (docs/security.md).

    .venv/bin/python bench/vault.py [--members 10000]

On a redis-server of its own (deploy/runtime.py, free port, temporary folder, stopped at the end):
- `klantreis vault upgrade`'s work (`MemberStore.upgrade`) on members written in the clear as before sealing
  existed: sealing them, rewrapping them after a master-key rotation, and a run with nothing left to do;
- sealing one new member's record and opening it again (`member_form.stored` / `member_form.record`), in µs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

from deploy import runtime
from deploy.vault_cli import upgrade
from services.identity import member_form
from services.identity.records import MemberRecord
from services.identity.settings import IdentitySettings
from services.identity.vault import Vault, new_master_keys
from shared.redis import make_redis

RECORD = MemberRecord(
    name="Sanne de Vries", email="sanne@example.nl", phone="0612345678", birth_date=date(1991, 4, 12),
    postcode="1034 AB", home_library="oba", signed_up_at=datetime(2026, 1, 5, tzinfo=UTC), channel="online",
    platform="website",
)  # fmt: skip


async def upgrades(url: str, members: int) -> None:
    keys = new_master_keys("k1")
    settings = IdentitySettings(redis_url=url, key_prefix="bench.", identity_master_keys=keys.text())
    redis = make_redis(settings)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for number in range(members):
                clear = {"name": f"Lezer {number}", "email": f"lezer{number}@example.nl", "phone": "",
                         "birth_date": "1991-04-12", "postcode": "1034 AB", "home_library": "oba",
                         "signed_up_at": "2025-01-01T00:00:00+00:00", "channel": "online", "platform": "website",
                         "language": "nl"}  # fmt: skip
                pipe.hset(settings.key("identity", "member", "{" + str(uuid.uuid4()) + "}"), mapping=cast(Any, clear))
            await pipe.execute()
    finally:
        await redis.aclose()
    rotated = IdentitySettings(**{**settings.model_dump(), "identity_master_keys": keys.with_new_current("k2").text()})
    for what, with_keys in (("seal", settings), ("rewrap", rotated), ("again", rotated)):
        started = time.perf_counter()
        done = await upgrade(with_keys)
        print(f"{what:<7} {done}  {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    args = parser.parse_args()
    vault = Vault(new_master_keys("k1"))
    stored = member_form.stored(vault, "m", RECORD)
    rounds = 20_000
    sealing = timeit.timeit(lambda: member_form.stored(vault, "m", RECORD), number=rounds) / rounds
    opening = timeit.timeit(lambda: member_form.record(vault, "m", stored), number=rounds) / rounds
    print(f"sealing a member {sealing * 1e6:.0f} µs, opening one {opening * 1e6:.0f} µs")
    runtime.ensure_redis_server()
    node = runtime.RedisNode(data_dir=Path(tempfile.mkdtemp(prefix="vault-bench-")), port=runtime.free_port())
    node.start(detach=False)
    try:
        node.wait_ready()
        asyncio.run(upgrades(node.url, args.members))
    finally:
        node.stop()


if __name__ == "__main__":
    main()
