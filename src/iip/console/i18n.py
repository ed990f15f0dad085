"""Console languages and message catalogues.

Catalogues are `.po` files compiled in memory at start-up, so there is no build step. The console's
own catalogue lives in `console/locale/`; a context with console pages may ship a `locale/` folder
next to its `template_dir`, merged over the console's. `babel.cfg` says where message ids are found,
for `pybabel extract -F src/iip/console/babel.cfg -k N_` and for the completeness test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
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
# Message id functions the Python extractor looks for.
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


def compile_po(path: Path, language: str) -> Translations:
    """Read a `.po` file and compile it to a `.mo` in memory."""
    with path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language, domain=DOMAIN)
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer, domain=DOMAIN)


def catalogue_path(locale_dir: Path, language: str) -> Path:
    return locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_translations(extra_locale_dirs: Sequence[Path] = ()) -> dict[str, Translations]:
    """One `Translations` per language: the console's catalogue, then each context's merged over it."""
    result: dict[str, Translations] = {}
    for language in LANGUAGES:
        base = catalogue_path(LOCALE_DIR, language)
        if not base.is_file():
            raise CatalogueError(f"missing console catalogue {base}")
        translations = compile_po(base, language)
        for locale_dir in extra_locale_dirs:
            path = catalogue_path(locale_dir, language)
            if path.is_file():
                translations.merge(compile_po(path, language))
        result[language] = translations
    return result


def module_locale_dir(template_dir: str | None) -> Path | None:
    """A context's own catalogues: `locale/` next to its templates folder, when present."""
    if not template_dir:
        return None
    candidate = Path(template_dir).parent / "locale"
    return candidate if candidate.is_dir() else None


def extract_msgids(package_dirs: Iterable[Path]) -> set[str]:
    """Every message id in the templates and Python files of the given package folders."""
    with EXTRACTION_CONFIG.open(encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config, str(EXTRACTION_CONFIG))
    found: set[str] = set()
    for directory in package_dirs:
        for _filename, _lineno, msg, _comments, _context in extract_from_dir(
            directory, method_map, options_map, keywords=KEYWORDS
        ):
            found.update(m for m in (msg if isinstance(msg, tuple) else (msg,)) if m)
    return found
