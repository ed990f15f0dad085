"""What a profile check reads from a document (pure): its events, their JSON pointers, the prefixes, the master data.

Master data (EPCIS header `epcisMasterData`, or `EPCISHeader/extension/EPCISMasterData` in XML) is
where product and location descriptions usually are; it is read into canonical identifier ->
attribute local name -> value, so that `urn:epcglobal:cbv:mda#descriptionShort`,
`cbvmda:descriptionShort` and `https://gs1.org/voc/descriptionShort` are all `descriptionShort`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from iip.traceability.epcis.documents import MAX_DOCUMENT_BYTES, EpcisDocument, parse_xml, read_document
from iip.traceability.profiles.locate import canonical

# Where each document type keeps its events, as a JSON pointer.
EVENT_LISTS = {
    "EPCISDocument": "/epcisBody/eventList",
    "EPCISQueryDocument": "/epcisBody/queryResults/resultsBody/eventList",
}


@dataclass(frozen=True)
class ProfileInput:
    """A read document: its events in internal form and where they are, with what lookups need beside them."""

    events: list[dict[str, Any]]
    context: dict[str, str] = field(default_factory=dict)
    master_data: dict[str, dict[str, str]] = field(default_factory=dict)
    event_list: str | None = None  # JSON pointer of the event list; None for a lone event

    def location(self, index: int) -> str:
        """Event `index` as a JSON pointer into the document ("" for a lone event, the whole document)."""
        return "" if self.event_list is None else f"{self.event_list}/{index}"

    @property
    def locations(self) -> list[str]:
        return [self.location(i) for i in range(len(self.events))]


def read_input(data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> ProfileInput:
    """The events, prefixes and master data of a JSON or XML EPCIS document (EpcisFormatError if unreadable)."""
    raw = data.encode() if isinstance(data, str) else data
    document = read_document(raw, max_bytes=max_bytes)
    is_xml = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"
    master = _xml_master_data(raw) if is_xml else _json_master_data(document)
    return ProfileInput(document.events, document.context, master, EVENT_LISTS.get(document.type))


def attribute_name(identifier: str) -> str:
    """A master data attribute's local name: what follows `#`, else the last `:` or `/`."""
    text = identifier.strip()
    if "#" in text:
        return text.rsplit("#", 1)[1]
    return text.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def _key(identifier: Any) -> str | None:
    if not isinstance(identifier, str) or not identifier.strip():
        return None
    return canonical(identifier) or identifier.strip()


def add_element(master: dict[str, dict[str, str]], element_id: Any, attributes: Iterable[tuple[Any, Any]]) -> None:
    """One element's attributes into `master` by local name, the first value of each kept (text and numbers)."""
    key = _key(element_id)
    if key is None:
        return
    entry = master.setdefault(key, {})
    for name, value in attributes:
        if not isinstance(name, str) or isinstance(value, bool):
            continue
        if isinstance(value, str | int | float) and str(value).strip():
            entry.setdefault(attribute_name(name), str(value).strip())


def _json_master_data(document: EpcisDocument) -> dict[str, dict[str, str]]:
    header = document.attributes.get("epcisHeader")
    master_data = header.get("epcisMasterData") if isinstance(header, Mapping) else None
    vocabularies = master_data.get("vocabularyList") if isinstance(master_data, Mapping) else None
    master: dict[str, dict[str, str]] = {}
    for vocabulary in vocabularies if isinstance(vocabularies, list) else []:
        elements = vocabulary.get("vocabularyElementList") if isinstance(vocabulary, Mapping) else None
        for element in elements if isinstance(elements, list) else []:
            if not isinstance(element, Mapping):
                continue
            attributes = element.get("attributes")
            pairs = [
                (a.get("id"), a.get("attribute"))
                for a in (attributes if isinstance(attributes, list) else [])
                if isinstance(a, Mapping)
            ]
            add_element(master, element.get("id"), pairs)
    return master


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _xml_master_data(raw: bytes) -> dict[str, dict[str, str]]:
    master: dict[str, dict[str, str]] = {}
    root = parse_xml(raw)  # read_document parsed it already, so this cannot fail
    for element in root.iter():
        if _local(element) != "VocabularyElement":
            continue
        pairs = [(a.get("id"), (a.text or "").strip()) for a in element if _local(a) == "attribute"]
        add_element(master, element.get("id"), pairs)
    return master
