"""notifications' Redis key layout, shared by its stores. No address and no name is ever stored.

Keys (prefix `notifications:`):
  campaign:<id>                 hash: id, status, version, library, created_at, updated_at, overlaps (JSON)
  campaign-versions:<id>        hash: version → definition (JSON): every version ever saved
  campaigns                     sorted set: campaign id → created (ms), for listing
  campaigns:active              set: ids of active campaigns
  campaigns:revision            counter bumped by every campaign change (deciders reload their cache)
  results:<campaign>            hash: triggered, sent, failed, deferred, suppressed:<reason> → count
  effect:<campaign>             hash: `<group>:<day>:total`, `<group>:<day>:resolved:<days>` → count (results.py)
  effect-campaigns              hash: campaign[:8] → campaign id, for the campaigns friction records name
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
  m:{<member>}                  hash: everything of one member, one field per item, each within 64 bytes; the
                                times of claims, inbox items and friction records in base-36 milliseconds
                                (`codec.stamp`; decimal ones written before are read too):
      p                           profile: "<age band>|<library>|<origin>|<language>"
      g                           guardian id
      c<medium><purpose>          consent, by initials (`cem`: e-mail, marketing): "1|<ms>" or "0|<ms>"
      r<slug>                     a proposition signed up through or taken part in
      w<member>                   a ward (a minor this member is the guardian of)
      k<claim tag>                the once-per-(campaign, trigger) claim: "<expires>|<sent>"; the sent times
                                  within the window are the frequency cap's
      d<trigger tag>              a trigger decided (for redeliveries; dropped after the decision TTL):
                                  "<ms>|<campaign[:8]>,<version>,<outcome>;…", the outcome `s` (queued),
                                  `i<locale>` (put in the inbox by deciding), `d<medium>`, `x<reason>`
      f<friction tag>             a friction decided (its tag: 32 bits): the marker of a friction trigger and
                                  the friction's effect in one: "<detected>|<decided>|<resolved>|<outcome>;…",
                                  times in base-36 ms (decided and resolved after detected), the outcome
                                  `<campaign[:8]>,<version>,<code>[,<group>]`, group `m` messaged or `h` holdout
                                  once the friction is in that campaign's effect; kept while it is or may be
      i<message id>               an in-app inbox message (the id's 16 bytes in URL-safe base64):
                                  "<text tag>|<created>|<read>|<about member>" (the text tag: 64 bits, base64)
      (before friction records, a friction a campaign acted on was `f<friction tag, 40 bits>` "<detected
      ms>|<day>|<resolved ms>" and `e<friction tag><campaign>` → group: still resolved and entered)
  delivery:{<member>}:<message id>  hash: d (the delivery, JSON), o (its events once it ended, until published)
  text:<tag>                    string: an in-app message's text, [campaign, title, body, locale, library] (JSON),
                                shared by everyone who got it (it names nobody)
One key per member (and one per delivery under way): erasure deletes them, and a member costs one key's overhead.
"""

from __future__ import annotations

import asyncio
import hashlib
from functools import lru_cache

from shared.settings import Settings

TAG_BYTES = 5


@lru_cache(maxsize=16384)  # a batch asks for the same ones again (a trigger's, a campaign's claim)
def tag(*parts: str, size: int = TAG_BYTES) -> str:
    """A short stable name for (long) ids inside one member's hash: 40 bits, unique enough among one member's."""
    return hashlib.blake2b("|".join(parts).encode(), digest_size=size).hexdigest()


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

    def delivery(self, member_id: str, message_id: str) -> str:
        return self("delivery", "{" + member_id + "}", message_id)

    def text(self, text_tag: str) -> str:
        return self("text", text_tag)

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

    @property
    def effect_campaigns(self) -> str:
        return self("effect-campaigns")
