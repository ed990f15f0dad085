"""EPCIS master data in a document's header (pure): vocabularies, their elements, attributes and children.

A JSON/JSON-LD document carries it at `epcisHeader.epcisMasterData.vocabularyList`, an XML one at
`EPCISHeader/extension/EPCISMasterData/VocabularyList`; both read into `VocabularyElement`s in the
JSON binding's form: the vocabulary `type`, the element `id`, `attributes` as `{"id", "attribute"}`
pairs in document order (a value as written: JSON as given, XML text as text, an XML attribute with
child elements as an object keyed `prefix:localName`, as event extensions are read), and `children`.

Nothing is normalised but the lookup key (`key`, the identifier's canonical form), so what was
captured is what is answered. What the JSON Schema and the XSD let through but the repository cannot
keep is a `ValidationIssue` located by JSON pointer (JSON) or by an XPath-like path (XML): a type or
an id that is no URI, a GS1 identifier with a broken check digit, a value a column cannot hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from iip.traceability.epcis import identifiers
from iip.traceability.epcis.validation import ValidationIssue

TYPE_LENGTH = 300  # a vocabulary type URI
ID_LENGTH = 500  # an element id, a child id, an attribute id
VTYPE = "urn:epcglobal:epcis:vtype:"
BUSINESS_LOCATION = VTYPE + "BusinessLocation"
READ_POINT = VTYPE + "ReadPoint"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_JSON_LIST = "/epcisHeader/epcisMasterData/vocabularyList"
_XML_PATH = ("EPCISHeader", "extension", "EPCISMasterData", "VocabularyList")
_MASTER_DATA_DOCUMENT_PATH = ("EPCISBody", "VocabularyList")  # EPCIS 1.x master data documents, read not captured


@dataclass(frozen=True)
class VocabularyElement:
    """One element of one vocabulary as a document gives it, and where it is in the document."""

    type: str
    id: str
    attributes: tuple[dict[str, Any], ...]  # {"id": ..., "attribute": ...}, in document order
    children: tuple[str, ...] | None  # None when the document gives no children list
    location: str

    @property
    def key(self) -> str:
        return lookup_key(self.id)


def lookup_key(identifier: str) -> str:
    """The form elements are matched in: a GS1 identifier canonical, anything else as written (stripped)."""
    try:
        return identifiers.canonical(identifier).strip()
    except identifiers.IdentifierError:
        return identifier.strip()


def short_type(vocabulary_type: str) -> str:
    """`BusinessLocation` for `urn:epcglobal:epcis:vtype:BusinessLocation`; other types as written."""
    return vocabulary_type.removeprefix(VTYPE)


def full_type(name: str) -> str:
    """The vocabulary type a user names: a bare name is an EPCIS `vtype`, a URI is itself."""
    text = name.strip()
    return text if ":" in text else VTYPE + text


# --- checks shared by both syntaxes


def _uri_problem(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "is required (a URI)"
    if "\x00" in value:
        return "holds a NUL character"
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are kept"
    if not _URI.fullmatch(value.strip()):
        return f"{value[:100]!r} is not a URI"
    broken = identifiers.check(value)
    return f"{value[:100]!r}: {broken}" if broken else None


def _nul_in(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_nul_in(v) for v in value)
    return False


class _Collector:
    def __init__(self) -> None:
        self.elements: list[VocabularyElement] = []
        self.issues: list[ValidationIssue] = []

    def uri(self, value: object, at: str, limit: int = ID_LENGTH) -> bool:
        problem = _uri_problem(value, limit)
        if problem is not None:
            self.issues.append(ValidationIssue(at, problem))
        return problem is None


# --- JSON


def json_master_data(header: object) -> tuple[list[VocabularyElement], list[ValidationIssue]]:
    """The vocabulary elements of a JSON document's `epcisHeader`, and what keeps them from being stored."""
    found = _Collector()
    master = header.get("epcisMasterData") if isinstance(header, Mapping) else None
    if master is None:
        return [], []
    if not isinstance(master, Mapping):
        return [], [ValidationIssue(_JSON_LIST.rsplit("/", 1)[0], "must be an object with a vocabularyList")]
    vocabularies = master.get("vocabularyList")
    if vocabularies is None:
        return [], []
    if not isinstance(vocabularies, list):
        return [], [ValidationIssue(_JSON_LIST, "must be a list of vocabularies")]
    for v_index, vocabulary in enumerate(vocabularies):
        at = f"{_JSON_LIST}/{v_index}"
        if not isinstance(vocabulary, Mapping):
            found.issues.append(ValidationIssue(at, "must be an object with a type"))
            continue
        type_ok = found.uri(vocabulary.get("type"), f"{at}/type", TYPE_LENGTH)
        elements = vocabulary.get("vocabularyElementList", [])
        if not isinstance(elements, list):
            found.issues.append(ValidationIssue(f"{at}/vocabularyElementList", "must be a list of elements"))
            continue
        for e_index, element in enumerate(elements):
            vocabulary_type = str(vocabulary.get("type")) if type_ok else ""
            _json_element(found, vocabulary_type, element, f"{at}/vocabularyElementList/{e_index}")
    return found.elements, found.issues


def _json_element(found: _Collector, vocabulary_type: str, element: object, at: str) -> None:
    if not isinstance(element, Mapping):
        found.issues.append(ValidationIssue(at, "must be an object with an id"))
        return
    ok = found.uri(element.get("id"), f"{at}/id")
    attributes: list[dict[str, Any]] = []
    given = element.get("attributes", [])
    if not isinstance(given, list):
        found.issues.append(ValidationIssue(f"{at}/attributes", "must be a list of attributes"))
        ok = False
        given = []
    for a_index, attribute in enumerate(given):
        where = f"{at}/attributes/{a_index}"
        if not isinstance(attribute, Mapping):
            found.issues.append(ValidationIssue(where, "must be an object with an id"))
            ok = False
            continue
        ok = found.uri(attribute.get("id"), f"{where}/id") and ok
        if _nul_in(attribute.get("attribute")):
            found.issues.append(ValidationIssue(f"{where}/attribute", "holds a NUL character"))
            ok = False
        attributes.append({"id": attribute.get("id"), "attribute": attribute.get("attribute")})
    children = element.get("children")
    if children is not None and not isinstance(children, list):
        found.issues.append(ValidationIssue(f"{at}/children", "must be a list of ids"))
        return
    for c_index, child in enumerate(children or []):
        ok = found.uri(child, f"{at}/children/{c_index}") and ok
    if ok and vocabulary_type:
        kept = tuple(children) if children is not None else None
        found.elements.append(VocabularyElement(vocabulary_type, str(element["id"]), tuple(attributes), kept, at))


# --- XML


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _children(el: etree._Element, name: str) -> Iterator[tuple[int, etree._Element]]:
    """The child elements of that local name, numbered from 1 as XPath does."""
    number = 0
    for child in el:
        if _local(child) == name:
            number += 1
            yield number, child


def _key(el: etree._Element) -> str:
    """`prefix:local` for a namespaced element, the local name alone without a namespace (as events are read)."""
    qname = etree.QName(el)
    if qname.namespace is None:
        return qname.localname
    prefix = next((p for p, ns in el.nsmap.items() if ns == qname.namespace and p), None)
    return f"{prefix}:{qname.localname}" if prefix else f"{qname.namespace}{qname.localname}"


def _xml_value(el: etree._Element) -> Any:
    """An attribute's value: its text, or its child elements as an object (a repeated one as a list)."""
    children = [c for c in el if isinstance(c.tag, str)]
    if not children:
        return (el.text or "").strip()
    value: dict[str, Any] = {}
    text = (el.text or "").strip()
    if text:
        value["#text"] = text
    for child in children:
        key, inner = _key(child), _xml_value(child)
        if key not in value:
            value[key] = inner
        elif isinstance(value[key], list):
            value[key].append(inner)
        else:
            value[key] = [value[key], inner]
    return value


def _vocabulary_lists(root: etree._Element) -> Iterable[tuple[str, etree._Element]]:
    path = "/" + _local(root)
    holders = [(path, root)]
    steps = _MASTER_DATA_DOCUMENT_PATH if _local(root) == "EPCISMasterDataDocument" else _XML_PATH
    for name in steps:
        holders = [(f"{at}/{name}", child) for at, holder in holders for _, child in _children(holder, name)]
    return holders


def xml_master_data(root: etree._Element) -> tuple[list[VocabularyElement], list[ValidationIssue]]:
    """The vocabulary elements of an XML document's header (`EPCISHeader/extension/EPCISMasterData`), or
    of an `EPCISMasterDataDocument`'s body."""
    found = _Collector()
    for at, vocabulary_list in _vocabulary_lists(root):
        for v_number, vocabulary in _children(vocabulary_list, "Vocabulary"):
            v_at = f"{at}/Vocabulary[{v_number}]"
            vocabulary_type = vocabulary.get("type")
            type_ok = found.uri(vocabulary_type, f"{v_at}/@type", TYPE_LENGTH)
            for _, element_list in _children(vocabulary, "VocabularyElementList"):
                for e_number, element in _children(element_list, "VocabularyElement"):
                    e_at = f"{v_at}/VocabularyElementList/VocabularyElement[{e_number}]"
                    _xml_element(found, vocabulary_type if type_ok and vocabulary_type else "", element, e_at)
    return found.elements, found.issues


def _xml_element(found: _Collector, vocabulary_type: str, element: etree._Element, at: str) -> None:
    ok = found.uri(element.get("id"), f"{at}/@id")
    attributes: list[dict[str, Any]] = []
    for number, attribute in _children(element, "attribute"):
        ok = found.uri(attribute.get("id"), f"{at}/attribute[{number}]/@id") and ok
        value = _xml_value(attribute)
        if _nul_in(value):  # pragma: no cover - XML cannot carry NUL; kept for symmetry with JSON
            ok = False
        attributes.append({"id": attribute.get("id"), "attribute": value})
    children: list[str] | None = None
    for _, listed in _children(element, "children"):
        children = children or []
        for number, child in _children(listed, "id"):
            text = (child.text or "").strip()
            ok = found.uri(text, f"{at}/children/id[{number}]") and ok
            children.append(text)
    if ok and vocabulary_type:
        element_id = str(element.get("id"))
        kept = tuple(children) if children is not None else None
        found.elements.append(VocabularyElement(vocabulary_type, element_id, tuple(attributes), kept, at))


# --- folding what several documents (or one) say about an element


def merge_attributes(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The attributes after `new` is captured over `old`: each attribute id `new` gives takes its values
    from `new` (all of them, in order, where the id first was), every other attribute stays as it was."""
    fresh: dict[str, list[dict[str, Any]]] = {}
    for attribute in new:
        fresh.setdefault(str(attribute["id"]), []).append({"id": attribute["id"], "attribute": attribute["attribute"]})
    merged: list[dict[str, Any]] = []
    placed: set[str] = set()
    for attribute in old:
        name = str(attribute["id"])
        if name not in fresh:
            merged.append({"id": attribute["id"], "attribute": attribute["attribute"]})
        elif name not in placed:
            merged.extend(fresh[name])
            placed.add(name)
    merged.extend(value for name, values in fresh.items() if name not in placed for value in values)
    return merged


def attribute_name(attribute_id: str) -> str:
    """An attribute's local name: what follows `#`, else the last `:` or `/` (`urn:epcglobal:cbv:mda#name` → `name`)."""
    text = attribute_id.strip()
    if "#" in text:
        return text.rsplit("#", 1)[1]
    return text.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


# --- what people read beside an identifier

_ADDRESS_PARTS = ("streetAddressOne", "streetAddressTwo", "streetAddressThree", "city", "state", "postalCode")


@dataclass(frozen=True)
class Description:
    """A location's or party's name and address as its master data gives them ("" when not given)."""

    name: str
    address: str


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, bool):
        return
    if isinstance(value, str | int | float):
        text = str(value).strip()
        if text:
            yield text
    elif isinstance(value, Mapping):
        for inner in value.values():
            yield from _texts(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _texts(inner)


def describe(attributes: Iterable[Mapping[str, Any]]) -> Description | None:
    """The name (CBV `name`) and address (CBV street, city, state, postal code and country, or an
    `address` attribute's text) an element's attributes give; None when they give neither."""
    by_name: dict[str, list[str]] = {}
    for attribute in attributes:
        local = attribute_name(str(attribute.get("id", "")))
        by_name.setdefault(local, []).extend(_texts(attribute.get("attribute")))
    name = next(iter(by_name.get("name", [])), "")
    parts = [text for part in (*_ADDRESS_PARTS, "countryCode") for text in by_name.get(part, [])[:1]]
    address = ", ".join(parts) or ", ".join(by_name.get("address", []))
    return Description(name, address) if name or address else None
