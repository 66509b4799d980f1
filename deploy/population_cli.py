"""`klantreis population load FILE`: children per postcode area and age (CBS StatLine CSV) into analytics, the
denominator of active reach 0-18 (docs/soob.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy import platform
from deploy.commands import command, say
from deploy.progress import waiting
from deploy.runtime import RuntimeProblem
from shared.settings import Settings


def _arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = sub.add_parser("load", help="replace the population with a CBS StatLine CSV file")
    load.add_argument(
        "file", type=Path, help="the CSV file (a synthetic sample: services/analytics/population_sample.csv)"
    )
    load.add_argument("--url", default=None, help="the analytics service (default KLANTREIS_ANALYTICS_URL)")
    load.add_argument("--key", default=None, help="an admin API key (default: the development key of `run`)")


@command("population", "load children per postcode area and age (CBS) for active reach 0-18", _arguments)
def cmd_population(args: argparse.Namespace) -> int:
    import httpx

    url = args.url or Settings().analytics_url
    key = args.key or (platform.DEV_KEY_FILE.read_text().strip() if platform.DEV_KEY_FILE.exists() else "")
    if not key:
        raise RuntimeProblem("no API key: pass --key, or run `klantreis run` once to make the development key")
    try:
        body = args.file.read_bytes()
    except OSError as exc:
        raise RuntimeProblem(f"cannot read {args.file}: {exc.strerror}") from None
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/csv"}
    try:
        with waiting(f"loading {args.file.name} into analytics …"):
            response = httpx.post(f"{url}/v1/population", content=body, headers=headers, timeout=60)
    except httpx.TransportError as exc:
        raise RuntimeProblem(
            f"the analytics service at {url} does not answer ({type(exc).__name__}); start it with `klantreis run`"
        ) from None
    if response.status_code != 200:
        detail = response.json().get("detail", response.text) if response.content else response.reason_phrase
        raise RuntimeProblem(f"the population was not loaded ({response.status_code}): {detail}")
    loaded = response.json()
    children = ", ".join(f"{band}: {count:,}" for band, count in loaded["children"].items())
    marked = " (synthetic figures)" if loaded["synthetic"] else ""
    say(f"population of {loaded['areas']:,} postcode areas, period {loaded['period']}{marked}: {children}")
    say(f"the report: {url}/v1/reports/population-reach · the page: {url}/pages/dashboard/reach-0-18")
    return 0
