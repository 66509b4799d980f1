"""The pages' words and numbers in Dutch (the default) and English.

Every string a page shows lives in one catalogue per language, `shared/web/nl.yaml` and `shared/web/en.yaml`,
as nested YAML read into dotted keys (`campaigns.title`). A missing key is an error, not a silent fallback: the
unit tests render every page in both languages and check the two catalogues hold the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast, get_args
from zoneinfo import ZoneInfo

import yaml

Language = Literal["nl", "en"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT_LANGUAGE: Language = "nl"
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# What a suppressed or missing number is shown as (an en dash), in every language.
NO_NUMBER = "\u2013"
_HERE = Path(__file__).parent


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[key] = str(value)
    return flat


@lru_cache(maxsize=len(LANGUAGES))
def catalogue(language: Language) -> Mapping[str, str]:
    raw = yaml.safe_load((_HERE / f"{language}.yaml").read_text(encoding="utf-8"))
    return _flatten(cast(Mapping[str, Any], raw))


def language_of(value: str | None) -> Language:
    for language in LANGUAGES:
        if value == language:
            return language
    return DEFAULT_LANGUAGE


class Translator:
    """Words, numbers and times for one language: `t("campaigns.title")`, `t.number(1234.5, 1)`."""

    def __init__(self, language: Language) -> None:
        self.language = language
        self._words = catalogue(language)

    def __call__(self, key: str, **values: Any) -> str:
        text = self._words[key]  # KeyError: a word missing from the catalogue
        return text.format(**values) if values else text

    def get(self, key: str, default: str) -> str:
        """For open sets (platforms, event types): the catalogue's word when it has one, else `default`."""
        return self._words.get(key, default)

    def number(self, value: float | None, decimals: int = 0) -> str:
        """`1.234,5` in Dutch, `1,234.5` in English; None (suppressed, not computable) is an en dash."""
        if value is None:
            return NO_NUMBER
        text = f"{value:,.{decimals}f}"
        if self.language == "nl":
            text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
        return text

    def percent(self, share: float | None, decimals: int = 1) -> str:
        """A share (0.25) as a percentage (`25,0%`)."""
        return NO_NUMBER if share is None else f"{self.number(share * 100, decimals)}%"

    def moment(self, value: str | datetime | None) -> str:
        """A time as the network reads it: Europe/Amsterdam, day and minute."""
        if not value:
            return NO_NUMBER
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        local = moment.astimezone(AMSTERDAM)
        return local.strftime("%d-%m-%Y %H:%M") if self.language == "nl" else local.strftime("%Y-%m-%d %H:%M")
