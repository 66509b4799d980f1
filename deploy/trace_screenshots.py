"""Screenshots of one member's traces in the Zipkin UI, for docs/operations.md (Debian's headless Chromium).

    .venv/bin/python -m deploy.trace_screenshots --member <member id> [--zipkin http://127.0.0.1:9411] [--out DIR]

Run it after `klantreis run` (its summary names the member): it writes zipkin-member-search.png (the search by
member), zipkin-sign-up.png (identity's sign-up trace), zipkin-fired-timer.png (journey's fired timer, its tags
with the link to the sign-up, and what notifications did under it) and zipkin-retry-event.png (the delivery, with
the Redis script that was not cached yet as an event).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from shared.telemetry import member_traces_url

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 900}


def traces_of(zipkin: str, member: str) -> list[list[dict[str, Any]]]:
    query = urllib.parse.urlencode({"annotationQuery": f"klantreis.member_id={member}", "limit": "50"})
    with urllib.request.urlopen(f"{zipkin}/api/v2/traces?{query}", timeout=10) as response:  # noqa: S310 (loopback)
        found: list[list[dict[str, Any]]] = json.loads(response.read())
    return found


def trace_with(traces: list[list[dict[str, Any]]], span_name: str) -> str:
    for spans in traces:
        if any(s.get("name") == span_name for s in spans):
            return str(spans[0]["traceId"])
    raise SystemExit(f"no trace of the member has a span {span_name!r}")


def shoot(page: Page, url: str, path: Path, click: str | None = None) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    if click is not None:
        page.get_by_text(click, exact=False).first.click()
        page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=False)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", required=True)
    parser.add_argument("--zipkin", default="http://127.0.0.1:9411")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "screenshots")
    args = parser.parse_args()
    ui = f"{args.zipkin}/zipkin"
    traces = traces_of(args.zipkin, args.member)
    sign_up = trace_with(traces, "post /v1/members")
    fired = trace_with(traces, "fire online-signup-not-activated")
    search = member_traces_url(ui, args.member)
    assert search is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]})
        shoot(page, search, args.out / "zipkin-member-search.png")
        shoot(page, f"{ui}/traces/{sign_up}", args.out / "zipkin-sign-up.png")
        shoot(page, f"{ui}/traces/{fired}", args.out / "zipkin-fired-timer.png", click="fire online-signup")
        shoot(page, f"{ui}/traces/{fired}", args.out / "zipkin-retry-event.png", click="notifications: deliver")
        browser.close()


if __name__ == "__main__":
    main()
