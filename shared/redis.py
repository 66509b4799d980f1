"""The Redis client every service uses. Nothing connects until the first command."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.settings import Settings


def make_redis(settings: Settings, *, binary: bool = False) -> Redis:
    """`binary`: values come back as bytes (state stored as MessagePack), not text. With `redis_username` set the
    client signs in as that ACL user (a service may touch only its own keys)."""
    return Redis.from_url(
        settings.redis_url,
        username=settings.redis_username or None,
        password=settings.redis_password.get_secret_value() or None,
        decode_responses=not binary,
        health_check_interval=30,
        socket_connect_timeout=5,
        retry_on_timeout=True,
    )
