"""Vendor and product names as an inventory and an advisory both write them.

The same vendor appears as `Siemens AG`, `SIEMENS` and `Siemens`; `Schneider Electric Software, LLC`
and `Schneider`; `Allen-Bradley` for `Rockwell Automation`; CISA's feed even carries mis-decoded
UTF-8 (`GeutebrÃ¼ck`). `vendor_key` maps all of these to one key; `vendor_keys` gives every key an
advisory's vendor field stands for (`Red Lion, AutomationDirect` names two vendors).

Products are compared as token sets (`product_tokens`): case, punctuation and the letter/digit seams
of model designations (`ET200SP` vs `ET 200SP`, `X-208` vs `X208`) do not matter; remarks in
parentheses, the vendor's umbrella brands (`SIMATIC`) and words that only say what kind of thing it
is (`family`, `series`) are dropped, and so are release numbers written into the name (`V7.1 and
earlier`), which the version constraint already carries. Order numbers (`6ES7518-4AP00-0AB0`) are
normalised separately by `model_number_key`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache


def word_set(text: str) -> frozenset[str]:
    """The words of a space-separated list (keeps long vocabularies readable)."""
    return frozenset(text.split())


# Legal forms and corporate words that say nothing about who the vendor is.
_LEGAL_SUFFIXES = word_set(
    "ag gmbh inc incorporated llc ltd limited co corp corporation company plc sa spa srl sas bv nv kg "
    "ab oy as asa kk pte pty se sp zoo holdings group international technologies technology "
    "healthcare"
)
# Normalised name -> canonical key, for names that differ by more than form.
_ALIASES: dict[str, str] = {
    "schneider": "schneider electric",
    "schneider electric software": "schneider electric",
    "allen bradley": "rockwell automation",
    "rockwell": "rockwell automation",
    "ge": "general electric",
    "ge digital": "general electric",
    "ge vernova": "general electric",
    "general electric ge": "general electric",
    "aveva software": "aveva",
    "wonderware": "aveva",
    "automationdirect": "automation direct",
    "controlbyweb": "control by web",
    "apsystems": "apsystems",
    "mitsubishi": "mitsubishi electric",
    "phillips": "philips",
    "hirschmann": "belden",
    "hirschmann automation and control": "belden",
    "wibu systems": "wibu",
    "codesys": "codesys",
    "3s smart software solutions": "codesys",
    "national instruments corp ni": "national instruments",
    "ni": "national instruments",
    "omron industrial automation": "omron",
    "abb ltd": "abb",
    "hitachi abb power grids": "hitachi energy",
    "moxa": "moxa",
    "sel": "schweitzer engineering laboratories",
    "weidmuller": "weidmueller",
    "opto22": "opto 22",
    "johnson controls": "johnson controls",
    "b and r": "b and r industrial automation",
    "br industrial automation": "b and r industrial automation",
    "triangle microworks": "triangle microworks",
    "siemens healthineers": "siemens healthineers",
    "franklin fueling system": "franklin fueling systems",
    "franklin electric fueling systems": "franklin fueling systems",
    "opw fuel managements systems": "opw fuel management systems",
    "yokogawa electric": "yokogawa",
    "b braun medical": "b braun",
    "b braun melsungen": "b braun",
    "emerson electric": "emerson",
    "wago kontakttechnik": "wago",
    "red lion controls": "red lion",
    "honeywell international": "honeywell",
    "hikvision digital": "hikvision",
    "hangzhou hikvision digital": "hikvision",
    "fuji electric fa components and systems": "fuji electric",
}
# Umbrella brands and kind-of-thing words: present or absent, they do not change which product it is.
GENERIC_PRODUCT_WORDS = word_set(
    "simatic wonderware allen bradley hirschmann family series product products device devices "
    "firmware fw all versions version the and for of with incl including variants variant based"
)
_CORPORATE_WORDS = word_set(
    "inc gmbh ltd llc limited corporation incorporated company international technologies technology"
)
_OWNERSHIP = re.compile(r"^(?:an?\s+)?(?:subsidiary|affiliate|division|brand)\s+of\s+", re.IGNORECASE)
_MOJIBAKE = re.compile("[\u00c2\u00c3][\u0080-\u00bf]")
_PARENTHESES = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_RELEASE_IN_NAME = re.compile(
    r"\b(?:(?:all\s+)?versions?\s+)?(?:(?:prior\s+to|before|<=?|>=?)\s*)?(?:v|versions?\s+)\d+(?:\.\d+)*"
    r"(?:\s*(?:sp|upd(?:ate)?|hf)\s*\d+)*(?:\s+(?:and|or)\s+(?:earlier|prior|older|later|newer|above|below))?"
    r"|\b(?:19|20)\d\d(?:\s*(?:r|sp|update)\s*\d+)*\b"  # release years: `Historian 2014 R2`
    r"|\bpart\s*(?:no\.?|number|#)\s*:?\s*[\w/.-]+"  # part numbers are model numbers, not names
    r"|\b(?:and|or)\s+(?:earlier|prior|older|later|newer)\b",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"[a-z]+|\d+")
_ORDER_NUMBER = re.compile(r"\b\d[A-Z]{2}\d{4}-\w{5}-\w{4}\b|\b[0-9][A-Z0-9]{3,}-[A-Z0-9-]{4,}\b")


def repair_mojibake(text: str) -> str:
    """`GeutebrÃ¼ck` -> `Geutebrück`: UTF-8 bytes once read as Latin-1."""
    if not _MOJIBAKE.search(text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _ascii_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", repair_mojibake(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _bare_vendor(text: str) -> str:
    text = _ascii_fold(text).replace("&", " and ").replace("+", " and ")
    text = _PARENTHESES.sub(" ", text)
    words = re.findall(r"[a-z0-9]+", text)
    while len(words) > 1 and (words[-1] in _LEGAL_SUFFIXES or words[-1] == "and"):
        words.pop()
    while len(words) > 1 and words[0] == "the":
        words.pop(0)
    return " ".join(words)


@lru_cache(maxsize=4096)
def vendor_key(name: str) -> str:
    """One canonical key per vendor (`Siemens AG` -> `siemens`, `Allen-Bradley` -> `rockwell automation`)."""
    bare = _bare_vendor(name)
    return _ALIASES.get(bare, bare)


@lru_cache(maxsize=4096)
def vendor_keys(name: str) -> frozenset[str]:
    """Every vendor an advisory's vendor field names.

    `Red Lion, AutomationDirect` -> both; `Sensormatic Electronics, LLC, a subsidiary of Johnson
    Controls Inc.` -> both; `General Electric (GE)` -> `general electric`.
    """
    keys = {vendor_key(name)}
    text = repair_mojibake(name)
    abbreviation = re.search(r"\(([^()]+)\)", text)
    if abbreviation:
        keys.add(vendor_key(abbreviation.group(1)))
    for part in re.split(r",|\band\b|\bformerly\b|/", _PARENTHESES.sub(" ", text)):
        key = vendor_key(_OWNERSHIP.sub("", part.strip()))
        if key and key not in _LEGAL_SUFFIXES:
            keys.add(key)
    keys.discard("")
    return frozenset(keys)


def vendorword_set(vendor: str) -> frozenset[str]:
    """The words of a vendor's names (as written and canonical): they do not tell products apart."""
    names = {_bare_vendor(vendor), *vendor_keys(vendor)}
    return frozenset(word for name in names for word in _TOKEN.findall(name)) - _LEGAL_SUFFIXES


@lru_cache(maxsize=65536)
def product_tokens(name: str, vendor: str = "") -> frozenset[str]:
    """The tokens that say which product `name` is, without `vendor`'s own names in it."""
    text = _ascii_fold(name)
    text = _PARENTHESES.sub(" ", text)
    text = _RELEASE_IN_NAME.sub(" ", text)
    tokens = {token.lstrip("0") or "0" if token.isdigit() else token for token in _TOKEN.findall(text)}
    if vendor:
        tokens -= vendorword_set(vendor)
    return frozenset(tokens - GENERIC_PRODUCT_WORDS - _CORPORATE_WORDS)


def product_alternatives(name: str) -> list[str]:
    """The products a name lists (`Stratix 5700 and ArmorStratix 5700 Switches`, `SCALANCE M-800 / S615`)."""
    bare = _PARENTHESES.sub(" ", name)
    parts = [p.strip() for p in re.split(r"\s+and\s+|\s+/\s+|,\s+|\s*\|\s*", bare) if p.strip()]
    return parts if len(parts) > 1 else []


def model_number_key(text: str) -> str:
    """An order number without spaces, dashes or case: `6ES7 518-4AP00-0AB0` -> `6ES75184AP000AB0`."""
    return re.sub(r"[^A-Z0-9]", "", repair_mojibake(text).upper())


def order_numbers(text: str) -> list[str]:
    """Order numbers written into a product name (`SCALANCE X307-3 (6GK5307-3BL00-2AA3)`)."""
    return _ORDER_NUMBER.findall(repair_mojibake(text).upper())
