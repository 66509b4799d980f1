"""`klantreis vault upgrade|rotate|retire`: identity's member keys (services/identity/vault.py, docs/security.md).

- upgrade: seal the personal data of members stored in the clear (written before sealing existed) and rewrap
  every member key wrapped by an older master key with the current one. Idempotent; `klantreis run` runs it.
- rotate (the local run's keys in .klantreis/): a new current master key, the old ones kept to unwrap; then
  upgrade. Restart the services (`klantreis down && klantreis run`) so identity wraps new members' keys with it.
- retire (the local run's keys): upgrade, then drop every master key but the current one.

Keys set in KLANTREIS_IDENTITY_MASTER_KEYS are the operator's to change where they keep them; upgrade works
with them as they are. No key is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime

from redis.exceptions import RedisError

from deploy import platform
from deploy.commands import command, say
from deploy.runtime import RuntimeProblem
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore, Upgraded
from services.identity.vault import MasterKeys, VaultError
from shared.redis import make_redis
from shared.settings import Settings


def _arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("upgrade", help="seal members stored in the clear; rewrap member keys to the current master key")
    sub.add_parser("rotate", help="a new current master key for the local run (.klantreis/), then upgrade")
    sub.add_parser("retire", help="upgrade, then drop the local run's master keys but the current one")


async def upgrade(settings: IdentitySettings) -> Upgraded:
    """Seal the members stored in the clear and rewrap member keys to the current master key (MemberStore)."""
    redis = make_redis(settings)
    try:
        return await MemberStore(redis, settings).upgrade()
    finally:
        await redis.aclose()


def upgrade_and_say(settings: Settings, keys: str) -> None:
    identity = IdentitySettings(**{**settings.model_dump(), "identity_master_keys": keys})
    try:
        done = asyncio.run(upgrade(identity))
    except (RedisError, OSError) as exc:
        raise RuntimeProblem(
            f"Redis at {settings.redis_url} is not reachable ({type(exc).__name__}); start it with `klantreis up`"
        ) from None
    except VaultError as exc:
        raise RuntimeProblem(f"{exc}: list that master key after the current one and run this again") from None
    say(
        f"member keys: {done.sealed} members sealed, {done.rewrapped} keys rewrapped to master key "
        f"{MasterKeys.parse(keys).current!r}, {done.unchanged} as they were"
    )


def _local_keys() -> MasterKeys:
    if os.environ.get(platform.MASTER_KEYS_ENV):
        raise RuntimeProblem(
            f"{platform.MASTER_KEYS_ENV} is set: change the keys where you keep it, then `klantreis vault upgrade`"
        )
    return MasterKeys.parse(platform.identity_master_keys())


@command("vault", "identity's member keys: seal, rewrap, rotate or retire master keys (never printed)", _arguments)
def cmd_vault(args: argparse.Namespace) -> int:
    if args.action == "upgrade":
        upgrade_and_say(Settings(), platform.identity_master_keys())
        return 0
    keys = _local_keys()
    if args.action == "rotate":
        keys = keys.with_new_current(datetime.now(UTC).strftime("k%Y%m%dT%H%M%S"))
        platform.write_master_keys(keys)
        upgrade_and_say(Settings(), keys.text())
        say("restart the services (klantreis down && klantreis run) so identity wraps with the new key; then")
        say("`klantreis vault retire` drops the old ones")
        return 0
    upgrade_and_say(Settings(), keys.text())
    platform.write_master_keys(MasterKeys(keys.current, {keys.current: keys.keys[keys.current]}))
    say(f"master keys: only {keys.current!r} is kept ({len(keys.keys) - 1} retired)")
    return 0
