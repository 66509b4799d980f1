"""Message templates: sandboxed Jinja2, checked when a campaign is saved, rendered at send time.

Templates see only the placeholders below, filled from the catalogue (library, branch, proposition), the
trigger and deep links; e-mail, SMS and push also see the recipient's name, which identity gives at send time
and which is never stored (so the in-app inbox, which is stored, cannot use it). A template that does not parse,
names an unknown placeholder or cannot render a sample is refused on save, naming the field; sending never
meets a template error it could have known before. A message that would write out an empty value (`unfilled`) is
refused by the preview and not sent (rendering.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from services.notifications.campaigns import CampaignDefinition, MessageTemplate
from shared.events import FieldError
from shared.events.types import Medium

# Placeholder → its attributes. `proposition` (and `links.proposition`) only in a campaign about a proposition;
# `recipient` not in the in-app inbox.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "library": frozenset({"code", "name", "website", "opening_hours", "branches"}),
    "branch": frozenset({"code", "name", "opening_hours"}),
    "proposition": frozenset({"slug", "name", "url"}),
    "links": frozenset({"app", "inbox", "library", "proposition"}),
    "trigger": frozenset({"type", "rule", "library", "time"}),
    "campaign": frozenset({"name"}),
    "recipient": frozenset({"name", "is_guardian"}),
}
NETWORK_NAME = "de Bibliotheek"
NETWORK_WEBSITE = "https://www.bibliotheek.nl"


MAX_REPEAT = 1000


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, which also refuses `"x" * 10**9` and huge powers: a template is checked by rendering it,
    and one careless template must not exhaust the service's memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        numbers = [v for v in (left, right) if isinstance(v, int | float)]
        if operator == "**" and any(abs(v) > 100 for v in numbers):
            raise SecurityError("power too large")
        repeats = isinstance(left, str | list) or isinstance(right, str | list)
        if operator == "*" and repeats and any(abs(v) > MAX_REPEAT for v in numbers):
            raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


# Messages are plain text (e-mail text/plain, SMS, push, the apps' inbox): HTML escaping would corrupt them.
_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Any:
    return _ENV.from_string(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render a template that passed `check` (raises jinja2.TemplateError otherwise)."""
    return str(_compiled(source).render(**context)).strip()


@lru_cache(maxsize=1024)
def _placeholders(source: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def placeholders(template: MessageTemplate) -> frozenset[str]:
    """The placeholders (`library`, `trigger`…) a message names: what its text can differ by."""
    return frozenset().union(*(_placeholders(source) for _, source in message_parts(template)))


def one_line(text: str) -> str:
    """Subjects and titles are single lines (a line break in a mail header is an injection)."""
    return " ".join(text.split())


def unfilled(source: str, values: Mapping[str, Any]) -> list[str]:
    """The placeholders the template writes out that have no value in `values` (an empty one, such as the
    opening hours of a library that gives none): a message never says "open: ." A placeholder only tested
    (`{% if branch.name %}`, `branch.name or library.name`) or given a `default` is not written out empty.
    Checked at send time too: a template naming no empty value (the usual case) is not rendered for it."""
    if not any(
        value == ""
        for root in _placeholders(source)
        if isinstance(attributes := values.get(root), Mapping)
        for value in attributes.values()
    ):
        return []
    written: list[str] = []

    class Unfilled(Undefined):
        def __str__(self) -> str:
            written.append(str(self._undefined_name))
            return ""

    holey = {
        root: {k: Unfilled(name=f"{root}.{k}") if v == "" else v for k, v in attributes.items()}
        if isinstance(attributes, Mapping)
        else attributes
        for root, attributes in values.items()
    }
    _compiled(source).render(**holey)
    return list(dict.fromkeys(written))


# -------------------------------------------------------------------------------------------- context


@dataclass(frozen=True)
class LibraryInfo:
    code: str
    name: str
    website: str = ""
    branches: Mapping[str, str] = field(default_factory=dict)  # code → name, the main branch first
    branch_hours: Mapping[str, str] = field(default_factory=dict)  # code → opening hours, where given

    @property
    def opening_hours(self) -> str:
        """The library's hours as members know them: those of its main (first) branch that gives any."""
        return next((self.branch_hours[c] for c in self.branches if c in self.branch_hours), "")


@dataclass(frozen=True)
class PropositionInfo:
    slug: str
    name: str
    url: str = ""


@dataclass(frozen=True)
class Sample:
    """Who a message is rendered for: what the catalogue and the trigger say, and the recipient at send time."""

    library: LibraryInfo | None = None
    library_code: str | None = None
    branch: str | None = None
    proposition: PropositionInfo | None = None
    trigger_type: str = ""
    trigger_rule: str = ""
    trigger_time: datetime | None = None
    recipient_name: str = ""
    is_guardian: bool = False


def context(
    definition: CampaignDefinition, medium: Medium, sample: Sample, *, app_link: str
) -> dict[str, dict[str, Any]]:
    """The placeholders a template of `medium` may use, filled. Unknown catalogue values fall back to the
    network's name and website, so a library missing from the catalogue still gets a sensible message."""
    library = sample.library
    code = library.code if library else (sample.library_code or "")
    branches = dict(library.branches) if library else {}
    branch_code = sample.branch or ""
    website = (library.website if library else "") or NETWORK_WEBSITE
    values: dict[str, dict[str, Any]] = {
        "library": {
            "code": code,
            "name": (library.name if library else "") or NETWORK_NAME,
            "website": website,
            "opening_hours": library.opening_hours if library else "",
            "branches": sorted(branches.values()),
        },
        "branch": {
            "code": branch_code,
            "name": branches.get(branch_code, ""),
            "opening_hours": (library.branch_hours.get(branch_code) if library else None)
            or (library.opening_hours if library else ""),
        },
        "links": {"app": app_link, "inbox": f"{app_link}/inbox", "library": website},
        "trigger": {
            "type": sample.trigger_type,
            "rule": sample.trigger_rule,
            "library": code,
            "time": sample.trigger_time.isoformat() if sample.trigger_time else "",
        },
        "campaign": {"name": definition.name},
    }
    if definition.proposition is not None:
        proposition = sample.proposition or PropositionInfo(definition.proposition, definition.proposition)
        url = proposition.url or f"{app_link}/propositions/{proposition.slug}"
        values["proposition"] = {"slug": proposition.slug, "name": proposition.name, "url": url}
        values["links"]["proposition"] = url
    if medium != "in_app":
        values["recipient"] = {"name": sample.recipient_name, "is_guardian": sample.is_guardian}
    return values


def _sample_for_check(definition: CampaignDefinition) -> Sample:
    return Sample(
        library=LibraryInfo(
            "oba",
            "OBA",
            "https://www.oba.nl",
            branches={"oosterdok": "OBA Oosterdok"},
            branch_hours={"oosterdok": "ma-zo 10-22 uur"},
        ),
        branch="oosterdok",
        trigger_type="nl.bibliotheek.friction.detected.v1",
        trigger_rule="online-signup-not-activated",
        recipient_name="Sanne de Vries",
        proposition=PropositionInfo(definition.proposition, "BoekStart") if definition.proposition else None,
    )


# --------------------------------------------------------------------------------------------- checks


def check(definition: CampaignDefinition) -> list[FieldError]:
    """Every template of the campaign: parses, names known placeholders only, renders a sample."""
    found: list[FieldError] = []
    sample = _sample_for_check(definition)
    for medium, by_locale in definition.messages.items():
        allowed = context(definition, medium, sample, app_link="https://example.org")
        for locale, template in by_locale.items():
            for name, source in message_parts(template):
                error = check_one(source, allowed)
                if error is not None:
                    found.append(FieldError(f"messages.{medium}.{locale}.{name}", error))
    return found


def message_parts(template: MessageTemplate) -> list[tuple[str, str]]:
    parts = [("subject", template.subject), ("title", template.title), ("body", template.body)]
    return [(name, source) for name, source in parts if source is not None]


def unfilled_parts(template: MessageTemplate, values: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """Each part of the message (subject, title, body) that would write out an empty value, with those
    placeholders (`unfilled`)."""
    return [(part, names) for part, source in message_parts(template) if (names := unfilled(source, values))]


def check_one(source: str, allowed: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why this template cannot be used with these placeholders, or None."""
    try:
        tree = _ENV.parse(source)
        names = meta.find_undeclared_variables(tree)  # compiles: unknown filters and tests fail here
    except TemplateError as exc:
        return f"template syntax error: {exc.message}"
    unknown = sorted(names - set(allowed))
    if unknown:
        return f"unknown placeholder {unknown[0]!r}; available: {', '.join(sorted(allowed))}"
    for path in _attribute_paths(tree):
        root, attribute = path
        if root in allowed and attribute not in allowed[root]:
            return f"unknown placeholder '{root}.{attribute}'; {root} has {', '.join(sorted(allowed[root]))}"
    try:
        _compiled(source).render(**allowed)
    except TemplateError as exc:
        # Includes the sandbox refusing unsafe attributes and unknown filters.
        return f"template cannot be rendered: {exc.message or type(exc).__name__}"
    except (TypeError, ValueError, ArithmeticError) as exc:
        return f"template cannot be rendered: {type(exc).__name__}"
    return None


def _attribute_paths(tree: nodes.Template) -> list[tuple[str, str]]:
    """`library.name` and `library['name']` in the template, as (root, attribute)."""
    paths = []
    for found in tree.find_all((nodes.Getattr, nodes.Getitem)):
        node = cast(Any, found)
        if not isinstance(node.node, nodes.Name):
            continue
        if isinstance(node, nodes.Getattr):
            paths.append((node.node.name, node.attr))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            paths.append((node.node.name, node.arg.value))
    return paths
