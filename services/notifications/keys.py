"""notifications' Redis key layout, shared by its stores. No address and no name is ever stored.

Keys (prefix `notifications:`):
  campaign:<id>                 hash: id, status, version, library, created_at, updated_at, overlaps (JSON)
  campaign-versions:<id>        hash: version → definition (JSON): every version ever saved
  campaigns                     sorted set: campaign id → created (ms), for listing
  campaigns:active              set: ids of active campaigns
  campaigns:revision            counter bumped by every campaign change (deciders reload their cache)
  results:<campaign>            hash: triggered, sent, failed, deferred, suppressed:<reason> → count
  effect:<campaign>             hash: `<group>:<day>:total`, `<group>:<day>:resolved:<days>` → count (results.py)
  broadcast:<campaign>          hash: a broadcast's run: status, library, cursor, sent, looked_at
  due                           sorted set: `<member>|<message id>` → when (ms): deliveries to make, including
                                quiet-hours deferrals and retries; a claimed one is leased (moved later)
  members-progress              hash: members-topic partition → next offset the projection has applied
  catalog:proposition:<slug>    hash: name_nl, name_en, retired
  catalog:offers:<slug>         hash: library → JSON {local_name, branches, url}: libraries offering it now
  catalog:library:<code>        hash: name, website, branches (JSON code → name), hours (JSON code → hours)
  libraries                     set: library codes members signed up at
  library-members:<code>        set: members whose home library it is (broadcast audiences)
  alias:<old id>                string: the member a merged id now is
  erased:<id>                   string: "1", so a late trigger for an erased member sends nothing (no data)
  m:{<member>}                  hash: everything of one member, one field per item (compact, see codec.py):
      p                           profile: [age_band, library, origin, platform, language]
      g                           guardian id
      c<medium><purpose>          consent, by initials (`cem`: e-mail, marketing): "1|<ms>" or "0|<ms>"
      r<slug>                     a proposition signed up through or taken part in
      w<member>                   a ward (a minor this member is the guardian of)
      s<message tag>              a message in the frequency cap's window → when (ms)
      k<claim tag>                the once-per-(campaign, trigger) claim → "<message tag>|<expires ms or ''>"
      d<trigger tag>              a trigger decided (for redeliveries; dropped after the decision TTL)
      j<message id>               a delivery waiting (now, after quiet hours, or for a retry)
      o<message id>               the events of a delivery that ended, until they are published
      i<message id>               an in-app inbox message
      f<friction tag>             a friction some campaign acted on: detected, resolved, campaign → group
One key per member: erasure deletes it, and a member costs one key's overhead, not a dozen.
"""

from __future__ import annotations

import asyncio
import hashlib

from shared.settings import Settings

TAG_LENGTH = 12


def tag(*parts: str) -> str:
    """A short stable name for a (long) id inside one member's hash: 48 bits, unique enough among one member's."""
    return hashlib.blake2b("|".join(parts).encode(), digest_size=TAG_LENGTH // 2).hexdigest()


def stop_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop.

    redis-py 8.1's asyncio client often swallows a cancellation that arrives while a command runs; a loop that
    then waits again would keep the process from shutting down. Background loops call this between rounds.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Keys:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def __call__(self, *parts: str) -> str:
        return self._settings.key("notifications", *parts)

    def member(self, member_id: str) -> str:
        return self("m", "{" + member_id + "}")

    @property
    def due(self) -> str:
        return self("due")

    def alias(self, member_id: str) -> str:
        return self("alias", member_id)

    def erased(self, member_id: str) -> str:
        return self("erased", member_id)

    def library_members(self, library: str) -> str:
        return self("library-members", library)

    def results(self, campaign_id: str) -> str:
        return self("results", campaign_id)

    def effect(self, campaign_id: str) -> str:
        return self("effect", campaign_id)
