"""The desk page on the real services: front-office staff of the OBA find a member, see what their library offers
someone who struggles with reading and writing, and refer them onward (`member.referred` on Kafka)."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from deploy import runtime
from services.identity.app import create_app as identity_app
from services.identity.settings import IdentitySettings
from services.propositions.app import create_app as propositions_app
from services.propositions.seed import Seed, load_seed, read_seed
from shared.settings import Settings
from tests.integration.conftest import MakeKey
from tests.support import header, read_topic, running

pytestmark = pytest.mark.integration


def the_oba_s_part_of_the_seed() -> Seed:
    """The OBA with its BoekStart and digiTaalhuis: enough catalogue for the desk, loaded in a fraction of the time."""
    seed = read_seed()
    wanted = {"boekstart", "digitaalhuis"}
    [oba] = [library for library in seed.libraries if library.code == "oba"]
    offerings = [o for o in oba.offerings if o.proposition in wanted]
    return Seed(
        propositions=[p for p in seed.propositions if p.slug in wanted],
        libraries=[oba.model_copy(update={"offerings": offerings})],
    )


async def test_the_desk_finds_a_member_shows_what_fits_and_refers_them_onward(
    settings: Settings, seed_libraries: list[str], admin_key: str, make_key: MakeKey
) -> None:
    async with runtime.serving(propositions_app(settings)) as propositions:
        async with httpx.AsyncClient(base_url=propositions, headers={"Authorization": f"Bearer {admin_key}"}) as p:
            await load_seed(p, the_oba_s_part_of_the_seed())
        # analytics does not answer here: the page says so and shows the rest.
        urls = {"propositions_url": propositions, "analytics_url": f"http://127.0.0.1:{runtime.free_port()}"}
        identity = identity_app(IdentitySettings(**{**settings.model_dump(), **urls}))
        async with running(identity) as client:
            email = f"{uuid.uuid4().hex[:10]}@example.nl"
            signed = await client.post(
                "/v1/members",
                json={"name": "Henk Visser", "email": email, "birth_date": "1961-05-02", "postcode": "1034 AB",
                      "home_library": "oba", "platform": "desk"},
                headers={"Authorization": f"Bearer {admin_key}"},
            )  # fmt: skip
            assert signed.status_code == 202, signed.text
            member_id = signed.json()["member_id"]

            form = await client.get("/pages/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            desk_key = await make_key("member-data", library="oba")
            await client.post(
                "/pages/sign-in", data={"csrf": token.group(1), "api_key": desk_key, "next": "/pages/desk"}
            )

            page = await client.get("/pages/desk", params={"q": email.upper(), "basic_skills": "true"})
            assert page.status_code == 200, page.text
            assert "Henk Visser" in page.text
            assert "analytics antwoordt nu niet" in page.text
            assert "Taalhuis Amsterdam" in page.text  # the OBA's digiTaalhuis, for someone struggling with reading
            assert "BoekStart" not in page.text  # for babies and their parents: not for Henk
            without = await client.get("/pages/desk", params={"q": member_id})
            assert "Taalhuis Amsterdam" not in without.text  # only when basic skills are the question

            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            referred = await client.post(
                "/pages/desk/referrals",
                data={"csrf": csrf.group(1), "member_id": member_id, "proposition": "digitaalhuis"},
            )
            assert referred.status_code == 303
            after = await client.get(referred.headers["location"])
            assert "Doorverwezen naar digitaalhuis." in after.text

            records = await read_topic(
                settings.kafka_bootstrap,
                settings.topic("identity.members.v1"),
                until=lambda rs: any(header(r, "ce_type") == "nl.bibliotheek.member.referred.v1" for r in rs),
            )
            [referral] = [r for r in records if header(r, "ce_type") == "nl.bibliotheek.member.referred.v1"]
            assert header(referral, "ce_subject") == member_id and header(referral, "ce_library") == "oba"
            assert json.loads(referral.value) == {"proposition": "digitaalhuis"}

            # A desk of another library does not find the OBA's member.
            await client.post("/pages/sign-out", data={"csrf": csrf.group(1)})
            form = await client.get("/pages/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            haarlem = await make_key("member-data", library="haarlem")
            await client.post(
                "/pages/sign-in", data={"csrf": token.group(1), "api_key": haarlem, "next": "/pages/desk"}
            )
            elsewhere = await client.get("/pages/desk", params={"q": email})
            assert "Henk Visser" not in elsewhere.text and "Geen lid gevonden" in elsewhere.text
