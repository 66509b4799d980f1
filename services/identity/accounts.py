"""Platform accounts (website, app, e-book platform, ILS card) linked to a member, and the logins platforms report
by those accounts. An external account id is kept only as a keyed hash (its `index`), which finds its owner; events
carry a pseudonymous `account_ref`."""

from __future__ import annotations

from datetime import UTC, datetime

from services.identity import domain
from services.identity.members import Members
from services.identity.records import LinkedAccount
from services.identity.settings import IdentitySettings
from services.identity.store import MemberStore
from services.identity.touches import SOURCE, Touch, conflict, member_event, switch_events
from shared.auth import Principal
from shared.events.members import AccountLinked, AccountUnlinked, LoginFailed, LoginFailure, LoginSucceeded
from shared.idempotency import Ids
from shared.kafka import EventPublisher
from shared.problems import Problem


class Accounts:
    def __init__(
        self, members: Members, store: MemberStore, publisher: EventPublisher, settings: IdentitySettings
    ) -> None:
        self._members = members
        self._store = store
        self._publisher = publisher
        self._hmac_key = settings.hmac_key()

    def _account_index(self, platform: str, external_id: str) -> str:
        return domain.keyed_hash(self._hmac_key, f"account:{platform}", external_id.strip())

    async def link_account(
        self, member_id: str, platform: str, external_id: str, caller: Principal, ids: Ids
    ) -> tuple[str, str]:
        resolved, record = await self._members.member(member_id, caller)
        index = self._account_index(platform, external_id)
        linked = (await self._store.accounts(resolved)).get(platform)
        if linked is not None and linked.index != index:
            raise conflict(f"the member already has another account on {platform} linked; unlink it first")
        owner = await self._store.claim_account(index, resolved)
        if owner != resolved:
            raise conflict(f"this account on {platform} belongs to another member")
        if linked is not None:
            return resolved, linked.ref  # linked already: nothing new to say
        ref = ids.new("account")
        touch = Touch(record.home_library, platform, datetime.now(UTC), f"{SOURCE}/accounts")
        event = member_event(
            AccountLinked(account_platform=platform, account_ref=ref), resolved, touch, ids.new("event")
        )
        await self._store.set_account(resolved, platform, LinkedAccount(ref, index))
        try:
            await self._publisher.publish(event)
        except Exception:
            await self._store.remove_account(resolved, platform)
            await self._store.release_account(index, resolved)
            raise
        return resolved, ref

    async def unlink_account(self, member_id: str, platform: str, caller: Principal, ids: Ids) -> str:
        resolved, record = await self._members.member(member_id, caller)
        linked = (await self._store.accounts(resolved)).get(platform)
        if linked is None:
            raise Problem(404, "Not Found", f"the member has no account on {platform} linked")
        touch = Touch(record.home_library, platform, datetime.now(UTC), f"{SOURCE}/accounts")
        event = member_event(
            AccountUnlinked(account_platform=platform, account_ref=linked.ref), resolved, touch, ids.new("event")
        )
        await self._publisher.publish(event)
        await self._store.remove_account(resolved, platform)
        await self._store.release_account(linked.index, resolved)
        return event.id

    async def record_login(
        self,
        platform: str,
        external_id: str,
        outcome: str,
        reason: LoginFailure | None,
        at: datetime,
        caller: Principal,
        ids: Ids,
    ) -> tuple[str, str]:
        """A platform's login outcome by external account: login_succeeded or login_failed, and a channel switch."""
        owner = await self._store.account_owner(self._account_index(platform, external_id))
        if owner is None:
            raise Problem(404, "Not Found", f"no member has this account on {platform} linked")
        return await self.login(owner, platform, outcome, reason, at, caller, ids)

    async def login(
        self,
        member_id: str,
        platform: str,
        outcome: str,
        reason: LoginFailure | None,
        at: datetime,
        caller: Principal,
        ids: Ids,
        event_id: str | None = None,
        source: str | None = None,
    ) -> tuple[str, str]:
        resolved, record = await self._members.member(member_id, caller)
        touch = Touch(record.home_library, platform, at, source or f"/platforms/{platform}")
        data = (
            LoginSucceeded(login_platform=platform)
            if outcome == "succeeded"
            else LoginFailed(login_platform=platform, reason=reason or "other")
        )
        event = member_event(data, resolved, touch, event_id or ids.new("event"))
        # A failed login is a touch too: the first attempt on a new platform is where a switch starts.
        switched = switch_events(record.last_touch, resolved, touch, ids)
        await self._publisher.publish_many([*switched, event])
        await self._store.touched(resolved, touch.channel, touch.platform)
        return resolved, event.id
