"""Console languages and message catalogues.

Catalogues are `.po` files compiled in memory at start-up, so there is no build step. The console's
own catalogue lives in `console/locale/`; a context with console pages may ship a `locale/` folder
next to its `template_dir`, merged over the console's. `babel.cfg` says where message ids are found,
for `pybabel extract -F src/iip/console/babel.cfg -k N_` and for the completeness test.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

DOMAIN = "messages"
PACKAGE_DIR = Path(__file__).parent
LOCALE_DIR = PACKAGE_DIR / "locale"
EXTRACTION_CONFIG = PACKAGE_DIR / "babel.cfg"

# Language code -> its own name. Autonyms are shown untranslated, as every language switch does.
LANGUAGES: dict[str, str] = {"zh_CN": "中文", "en": "English"}
HTML_LANG: dict[str, str] = {"zh_CN": "zh-CN", "en": "en"}
# `babel.cfg` names extractors by their entry point; resolved here so extraction needs no plugin lookup.
EXTRACTORS: dict[str, str] = {"jinja2": "jinja2.ext:babel_extract"}
# Message id functions the extractors look for.
KEYWORDS: dict[str, None] = {"N_": None, "_": None, "gettext": None}


def N_(msgid: str) -> str:  # noqa: N802 - the conventional name extractors know
    """Mark a string for extraction; it is translated later, when rendered."""
    return msgid


@dataclass(frozen=True, slots=True)
class Message:
    """A message id and its `%(name)s` parameters, translated when a template renders it."""

    msgid: str
    params: Mapping[str, object] = field(default_factory=dict)


def message(msgid: str, **params: object) -> Message:
    return Message(msgid, params)


class CatalogueError(Exception):
    pass


@dataclass(frozen=True)
class Catalogues:
    """Compiled translations per language, and each catalogue's translated entries."""

    translations: dict[str, Translations]
    entries: dict[str, dict[str, str]]  # language -> msgid -> translation (non-empty, not fuzzy)

    def has(self, language: str, msgid: str) -> bool:
        return bool(self.entries.get(language, {}).get(msgid))


def catalogue_path(locale_dir: Path, language: str) -> Path:
    return locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def compile_po(path: Path, language: str) -> tuple[Translations, dict[str, str]]:
    """Read a `.po` file and compile it to a `.mo` in memory."""
    with path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language, domain=DOMAIN)
    entries = {
        entry.id: entry.string
        for entry in catalog
        if isinstance(entry.id, str) and entry.id and isinstance(entry.string, str) and entry.string and not entry.fuzzy
    }
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer, domain=DOMAIN), entries


def load_catalogues(extra_locale_dirs: Sequence[Path] = ()) -> Catalogues:
    """The console's catalogue per language, with each context's catalogue merged over it."""
    translations: dict[str, Translations] = {}
    entries: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        base = catalogue_path(LOCALE_DIR, language)
        if not base.is_file():
            raise CatalogueError(f"missing console catalogue {base}")
        translations[language], entries[language] = compile_po(base, language)
        for locale_dir in extra_locale_dirs:
            path = catalogue_path(locale_dir, language)
            if path.is_file():
                extra, extra_entries = compile_po(path, language)
                translations[language].merge(extra)
                entries[language].update(extra_entries)
    return Catalogues(translations, entries)


def module_locale_dir(template_dir: str | None) -> Path | None:
    """A context's own catalogues: `locale/` next to its templates folder, when present."""
    if not template_dir:
        return None
    candidate = Path(template_dir).parent / "locale"
    return candidate if candidate.is_dir() else None


def extraction_map() -> tuple[list[tuple[str, str]], dict[str, dict[str, str]]]:
    """`babel.cfg` as babel reads it: sections `[method: pattern]`, their keys the method's options."""
    parser = configparser.RawConfigParser()
    with EXTRACTION_CONFIG.open(encoding="utf-8") as config:
        parser.read_file(config)
    method_map: list[tuple[str, str]] = []
    options_map: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        method, _, pattern = (part.strip() for part in section.partition(":"))
        method_map.append((pattern, EXTRACTORS.get(method, method)))
        options_map[pattern] = dict(parser.items(section))
    return method_map, options_map


def extract_msgids(package_dirs: Iterable[Path]) -> set[str]:
    """Every message id in the templates and Python files of the given package folders."""
    method_map, options_map = extraction_map()
    found: set[str] = set()
    for directory in package_dirs:
        for _filename, _lineno, msg, _comments, _context in extract_from_dir(
            directory, method_map, options_map, keywords=KEYWORDS
        ):
            found.update(m for m in (msg if isinstance(msg, tuple) else (msg,)) if m)
    return found
