"""GS1 links of a tenant, and resolution as a GS1-Conformant resolver (standard 1.2) answers it.

Resolution reads across tenants: the resolver is public and a GS1 key is linked by one tenant only
(the brand owner), which `create` enforces. For each link type the links of the most specific
qualifier level win; the default link is searched from the most specific level up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from iip.identifiers.gs1 import codec
from iip.identifiers.gs1.repository import Gs1LinkRepository
from iip.identifiers.models import Gs1Link
from iip.identifiers.public import ExtraLink
from iip.kernel.auth import Principal
from iip.kernel.errors import Conflict, Invalid, NotFound

GS1_VOC = "https://gs1.org/voc/"
# Spellings of the GS1 Web Vocabulary namespace seen in the wild; all mean the `gs1:` prefix.
GS1_VOC_SPELLINGS = (
    "https://gs1.org/voc/",
    "http://gs1.org/voc/",
    "https://www.gs1.org/voc/",
    "http://www.gs1.org/voc/",
    "https://ref.gs1.org/voc/",
)
DEFAULT_LINK = "gs1:defaultLink"
DEFAULT_LINK_MULTI = "gs1:defaultLinkMulti"
LINKSET_REQUESTS = frozenset({"linkset", "all"})  # `all` is the 1.0 spelling of `linkset`
DEFAULT_REQUESTS = frozenset({DEFAULT_LINK, DEFAULT_LINK_MULTI})

GS1_LINK_TYPE = re.compile(r"^gs1:[A-Za-z][A-Za-z0-9]{0,95}$")
REGISTERED_RELATION = re.compile(r"^[a-z][a-z0-9.-]{0,99}$")  # IANA link relation names, e.g. `describedby`
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalise_link_type(value: str) -> str:
    """`https://gs1.org/voc/pip` and friends become the CURIE `gs1:pip`; anything else is kept."""
    value = value.strip()
    for spelling in GS1_VOC_SPELLINGS:
        if value.startswith(spelling):
            return "gs1:" + value.removeprefix(spelling)
    return value


def check_link_type(value: str) -> str:
    link_type = normalise_link_type(value)
    if link_type in DEFAULT_REQUESTS or link_type in LINKSET_REQUESTS:
        raise Invalid(f"'{link_type}' is chosen by the resolver; give the link's own type and set is_default")
    is_uri = re.match(r"^https?://[^\s/]+/\S*$", link_type) is not None and len(link_type) <= 100
    if not (GS1_LINK_TYPE.match(link_type) or REGISTERED_RELATION.match(link_type) or is_uri):
        raise Invalid(
            f"link type '{value}' must be a GS1 Web Vocabulary term like 'gs1:pip', "
            "a registered relation like 'describedby', or an absolute URI",
            code="bad_link_type",
        )
    return link_type


def relation_uri(link_type: str) -> str:
    """The relation as a linkset member name: `gs1:pip` -> `https://gs1.org/voc/pip`."""
    return GS1_VOC + link_type.removeprefix("gs1:") if link_type.startswith("gs1:") else link_type


def language_preferences(header: str | None) -> list[str]:
    """Language ranges of an Accept-Language header, most wanted first (q=0 dropped, order kept on ties)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or not (tag == "*" or LANGUAGE_TAG.match(tag)):
            continue
        quality = 1.0
        match = re.search(r"q\s*=\s*([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                continue
        if quality > 0:
            ranked.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def _fallback(candidates: Sequence[Gs1Link]) -> Gs1Link:
    return next((c for c in candidates if c.is_default), next((c for c in candidates if not c.language), candidates[0]))


def negotiate_language(candidates: Sequence[Gs1Link], languages: Sequence[str]) -> Gs1Link:
    """The candidate whose language the client wants most; exact tags before same-language variants."""
    for wanted in languages:
        if wanted == "*":
            return _fallback(candidates)
        exact = [c for c in candidates if c.language.lower() == wanted.lower()]
        if exact:
            return _fallback(exact)
        primary = wanted.split("-")[0].lower()
        related = [c for c in candidates if c.language and c.language.split("-")[0].lower() == primary]
        if related:
            return _fallback(related)
    return _fallback(candidates)


class LinkTarget(Protocol):
    """What a linkset entry and a redirect need of a link: a stored `Gs1Link` or a source's `ExtraLink`."""

    @property
    def href(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def media_type(self) -> str: ...
    @property
    def language(self) -> str: ...


# Given the tenant that links the key, the links other contexts add (absolute hrefs).
ExtraLinks = Callable[[str], Sequence[ExtraLink]]


@dataclass(frozen=True)
class Resolution:
    """What a resolver request found: the redirect target and the links for a linkset."""

    link: codec.DigitalLink
    target: LinkTarget
    links: tuple[Gs1Link, ...]  # per link type, those of the most specific qualifier level
    defaults: tuple[Gs1Link, ...]  # the default links of the level the default came from
    extra: tuple[ExtraLink, ...] = ()  # other contexts' links, of types the key has no link of


def link_target(link: LinkTarget) -> dict[str, Any]:
    """One target object of an RFC 9264 linkset."""
    target: dict[str, Any] = {"href": link.href}
    if link.title:
        target["title"] = link.title
    if link.media_type:
        target["type"] = link.media_type
    if link.language:
        target["hreflang"] = [link.language]
    return target


def linkset_document(anchor: str, resolution: Resolution) -> dict[str, Any]:
    """The RFC 9264 JSON linkset (`application/linkset+json`) of a resolved key."""
    entry: dict[str, Any] = {"anchor": anchor}
    default = _fallback(resolution.defaults) if resolution.defaults else resolution.target
    entry[relation_uri(DEFAULT_LINK)] = [link_target(default)]
    if len(resolution.defaults) > 1:
        entry[relation_uri(DEFAULT_LINK_MULTI)] = [link_target(d) for d in resolution.defaults]
    listed: list[Gs1Link | ExtraLink] = [*resolution.links, *resolution.extra]
    for link in listed:
        entry.setdefault(relation_uri(link.link_type), []).append(link_target(link))
    return {"linkset": [entry]}


class Gs1LinkService:
    """Link CRUD scoped to the acting principal's tenant (platform operators see all), and resolution."""

    def __init__(self, session: Session) -> None:
        self.links = Gs1LinkRepository(session)

    @staticmethod
    def _scope(actor: Principal) -> str | None:
        return None if actor.is_platform else actor.tenant_id

    def create(
        self,
        actor: Principal,
        *,
        gs1_key: str,
        qualifiers: str = "",
        link_type: str,
        href: str,
        title: str = "",
        language: str = "",
        media_type: str = "",
        is_default: bool = False,
        handle: str | None = None,
    ) -> Gs1Link:
        digital_link = codec.parse_digital_link("/".join(("", gs1_key.strip().strip("/"), qualifiers.strip("/"))))
        if digital_link.attributes:
            raise Invalid("a link names a key and its qualifiers; data attributes do not belong to it")
        if len(digital_link.key) > 100 or len(digital_link.qualifier_path) > 300:
            raise Invalid("GS1 key or qualifiers too long to store")
        owner = self.links.key_owner(digital_link.key)
        if owner is not None and owner != actor.tenant_id:
            raise Conflict(f"GS1 key {digital_link.key} is linked by another tenant", code="gs1_key_taken")
        link = Gs1Link(
            tenant_id=actor.tenant_id,
            gs1_key=digital_link.key,
            qualifiers=digital_link.qualifier_path,
            link_type=check_link_type(link_type),
            href=_check_href(href),
            title=_check_text(title, "title", 300),
            language=_check_language(language),
            media_type=_check_media_type(media_type),
            is_default=is_default,
            handle=_check_handle(handle),
        )
        if self.links.find_same(link) is not None:
            raise Conflict("the same link already exists for this key", code="gs1_link_exists")
        if not self.links.has_level(link.gs1_key, link.qualifiers):
            link.is_default = True  # the resolver needs a default link for every key and qualifier level
        if link.is_default:
            # One default per language at a level; several languages make gs1:defaultLinkMulti.
            for other in self.links.defaults_at(link.gs1_key, link.qualifiers, link.language):
                other.is_default = False
        return self.links.add(link)

    def list_links(
        self,
        actor: Principal,
        *,
        gs1_key: str | None = None,
        qualifiers: str | None = None,
        link_type: str | None = None,
        handle: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Gs1Link]:
        if gs1_key is not None:
            gs1_key = codec.parse_digital_link("/" + gs1_key.strip().strip("/")).key
        return self.links.list_links(
            self._scope(actor),
            gs1_key=gs1_key,
            qualifiers=qualifiers,
            link_type=normalise_link_type(link_type) if link_type is not None else None,
            handle=handle,
            limit=limit,
            offset=offset,
        )

    def get(self, link_id: str, actor: Principal) -> Gs1Link:
        number = int(link_id) if link_id.isdecimal() and len(link_id) <= 18 else None
        link = self.links.get(number, self._scope(actor)) if number is not None and number < 2**31 else None
        if link is None:
            raise NotFound(f"GS1 link '{link_id}' not found")
        return link

    def delete(self, link_id: str, actor: Principal) -> Gs1Link:
        link = self.get(link_id, actor)
        self.links.delete(link)
        return link

    def resolve(
        self,
        digital_link: codec.DigitalLink,
        *,
        link_type: str | None = None,
        languages: Sequence[str] = (),
        extra_links: ExtraLinks | None = None,
        linkset: bool = False,
    ) -> Resolution:
        """Choose the target for `link_type` (or the default link) and gather the links for a linkset.

        `extra_links` is asked (with the tenant that links the key) only when its links can matter:
        for a linkset, or for a link type the key has no link of. A stored link of a type wins over
        an extra one.
        """
        rows = self.links.for_resolution(digital_link.key, digital_link.qualifier_levels)
        levels = [[r for r in rows if r.qualifiers == level] for level in digital_link.qualifier_levels]
        levels = [level for level in levels if level]
        if not levels:
            raise NotFound(f"no links for GS1 key {digital_link.path}", code="gs1_key_not_found")

        links: list[Gs1Link] = []
        covered: set[str] = set()
        for level in levels:
            links += [r for r in level if r.link_type not in covered]
            covered |= {r.link_type for r in level}

        defaults: list[Gs1Link] = next(
            ([r for r in level if r.is_default] for level in levels if any(r.is_default for r in level)), []
        )
        target: LinkTarget = negotiate_language(defaults or levels[0], languages)
        wanted = normalise_link_type(link_type) if link_type else None
        specific = wanted is not None and wanted not in DEFAULT_REQUESTS and wanted not in LINKSET_REQUESTS
        extra: tuple[ExtraLink, ...] = ()
        if extra_links is not None and (linkset or (specific and wanted not in covered)):
            extra = tuple(e for e in extra_links(levels[0][0].tenant_id) if e.link_type not in covered)
        if specific:
            of_type = next(
                (
                    [r for r in level if r.link_type == wanted]
                    for level in levels
                    if any(r.link_type == wanted for r in level)
                ),
                [],
            )
            extra_of_type = [e for e in extra if e.link_type == wanted]
            # A type the key lacks falls back to the default link, as the standard asks.
            if of_type:
                target = negotiate_language(of_type, languages)
            elif extra_of_type:
                target = extra_of_type[0]
        return Resolution(digital_link, target, tuple(links), tuple(defaults), extra)


def _check_href(href: str) -> str:
    href = href.strip()
    # Only web targets: a javascript: or data: target would turn the resolver into an attack vector.
    if not re.match(r"^https?://[^\s/?#]+", href) or CONTROL.search(href) or len(href) > 2000:
        raise Invalid("href must be an absolute http(s) URL of at most 2000 characters", code="bad_href")
    return href


def _check_text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit or CONTROL.search(value):
        raise Invalid(f"{what} must be at most {limit} characters without control characters")
    return value


def _check_language(value: str) -> str:
    value = value.strip()
    if value and (len(value) > 20 or not LANGUAGE_TAG.match(value)):
        raise Invalid(f"language '{value}' is not a BCP 47 tag like 'en' or 'zh-CN'", code="bad_language")
    return value


def _check_media_type(value: str) -> str:
    value = value.strip().lower()
    if value and (len(value) > 100 or not MEDIA_TYPE.match(value)):
        raise Invalid(f"media type '{value}' is not like 'text/html'", code="bad_media_type")
    return value


def _check_handle(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    prefix, slash, suffix = value.partition("/")
    if not slash or not prefix or not suffix or len(value) > 600 or re.search(r"\s", value) or CONTROL.search(value):
        raise Invalid(f"handle '{value}' must look like 'prefix/suffix', e.g. '88.118.8/ABC'", code="bad_handle")
    return value
