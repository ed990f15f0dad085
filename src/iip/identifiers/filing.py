"""Filing (备案): an enterprise applies for a prefix under a parent prefix homed on this node.

A filing is a row of `identifiers_prefix` with `parent` set: `pending` until a platform operator
approves or rejects it (with a reason the applicant reads). The applicant chooses the admin secret
when applying; only its argon2 hash is kept, and on approval it becomes the HS_SECKEY of the prefix's
admin identity `300:0.NA/<prefix>`, created as `HandleService.create_prefix` creates it. Until then
the Handle API refuses writes under the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from iip.identifiers.codec import parse_prefix
from iip.identifiers.models import Prefix
from iip.identifiers.repository import HandleRepository
from iip.identifiers.service import HandleService
from iip.kernel import audit
from iip.kernel.auth import Principal, hash_password, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import Conflict, Invalid, NotFound

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
MIN_SECRET_LENGTH = 8

# GB 32100-2015 统一社会信用代码: 18 characters of this alphabet (no I, O, S, V, Z); position 18 checks 1-17.
CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)  # 3^(i-1) mod 31
CREDIT_CODE_RE = re.compile(rf"^[{CREDIT_CODE_ALPHABET}]{{2}}[0-9]{{6}}[{CREDIT_CODE_ALPHABET}]{{10}}$")


def credit_code_check_character(first17: str) -> str:
    total = sum(CREDIT_CODE_ALPHABET.index(c) * w for c, w in zip(first17, CREDIT_CODE_WEIGHTS, strict=True))
    return CREDIT_CODE_ALPHABET[(31 - total % 31) % 31]


def parse_credit_code(text: str) -> str:
    """A unified social credit code, upper-cased; Invalid unless its format and check character hold."""
    code = text.strip().upper()
    if not CREDIT_CODE_RE.match(code):
        raise Invalid(
            "the unified social credit code must be 18 characters: 2 of 0-9 and A-Y (no I, O, S, V, Z), "
            "a 6-digit division code, then 10 more such characters",
            code="invalid_credit_code",
        )
    expected = credit_code_check_character(code[:17])
    if code[17] != expected:
        raise Invalid(
            f"the unified social credit code's check character is wrong (expected {expected})",
            code="invalid_credit_code",
        )
    return code


@dataclass(frozen=True, slots=True)
class CompanyDetails:
    name: str
    credit_code: str
    address: str
    contact_name: str
    contact_phone: str
    industry: str
    contact_email: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "credit_code": parse_credit_code(self.credit_code),
            "address": self.address,
            "contact_name": self.contact_name,
            "contact_phone": self.contact_phone,
            "contact_email": self.contact_email,
            "industry": self.industry,
        }


class FilingService:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = HandleRepository(session)

    def apply(self, actor: Principal, prefix: str, parent: str, company: CompanyDetails, secret: str) -> Prefix:
        """A pending filing for `prefix` under `parent`, in the applicant's tenant."""
        actor.require("identifiers.write")
        details = company.as_dict()
        key, parent_key = parse_prefix(prefix).lower(), parse_prefix(parent).lower()
        if not key.startswith(f"{parent_key}."):
            raise Invalid(f"prefix '{prefix}' is not under '{parent}': expected {parent}.<segment>")
        if len(secret) < MIN_SECRET_LENGTH:
            raise Invalid(f"the prefix secret must be at least {MIN_SECRET_LENGTH} characters")
        parent_row = self.repo.prefix(parent_key)
        if parent_row is None or parent_row.node_url or parent_row.status != APPROVED:
            raise Invalid(f"parent prefix '{parent}' is not homed on this node", code="parent_not_homed")
        existing = self.repo.prefix(key)
        if existing is not None:
            if existing.status != REJECTED or existing.tenant_id != actor.tenant_id:
                raise Conflict(f"prefix '{prefix}' is taken or already applied for", code="prefix_exists")
            record = existing  # the applicant applies again after a rejection
        else:
            if self.repo.exists(f"0.na/{key}"):
                raise Conflict(f"handle '0.NA/{prefix}' already exists", code="handle_exists")
            record = Prefix(id=new_id(), tenant_id=actor.tenant_id, prefix=key)
            self.session.add(record)
        record.parent = parent_key
        record.status = PENDING
        record.details = details
        record.secret_hash = hash_password(secret)
        record.applied_by = actor.label
        record.decided_by = ""
        record.decided_at = None
        record.reason = ""
        record.created_at = record.updated_at = utcnow()
        self.session.flush()
        self._audit(actor, "identifiers.filing.apply", record, f"prefix {key} under {parent_key}")
        return record

    def list(self, actor: Principal, status: str | None = None) -> list[Prefix]:
        actor.require("identifiers.read")
        query = select(Prefix).where(Prefix.parent.is_not(None)).order_by(Prefix.created_at, Prefix.prefix)
        if not actor.is_platform:
            query = query.where(Prefix.tenant_id == actor.tenant_id)
        if status is not None:
            query = query.where(Prefix.status == status)
        return list(self.session.scalars(query))

    def get(self, actor: Principal, filing_id: str) -> Prefix:
        """A filing of the actor's tenant (any for platform operators); others answer as missing."""
        record = self.session.get(Prefix, filing_id)
        if record is None:
            record = self.repo.prefix(filing_id.lower())  # by the prefix applied for, as the CLI names it
        if record is None or record.parent is None or not (actor.is_platform or record.tenant_id == actor.tenant_id):
            raise NotFound(f"filing '{filing_id}' not found")
        actor.require("identifiers.read")
        return record

    def approve(self, actor: Principal, filing_id: str) -> Prefix:
        """Approve: create the admin identity with the applicant's secret; registrations open."""
        record = self._pending(actor, filing_id)
        HandleService(self.session).create_admin_identity(
            record.tenant_id, record.prefix, record.secret_hash, actor=actor
        )
        self._decide(actor, record, APPROVED, "")
        return record

    def reject(self, actor: Principal, filing_id: str, reason: str) -> Prefix:
        reason = reason.strip()
        if not reason:
            raise Invalid("a rejection needs a reason")
        record = self._pending(actor, filing_id)
        self._decide(actor, record, REJECTED, reason)
        return record

    def _pending(self, actor: Principal, filing_id: str) -> Prefix:
        record = self.get(actor, filing_id)  # 404 before 403: another tenant's filing stays invisible
        actor.require("platform.write")
        if record.status != PENDING:
            raise Conflict(f"filing '{filing_id}' is already {record.status}", code="filing_decided")
        return record

    def _decide(self, actor: Principal, record: Prefix, status: str, reason: str) -> None:
        record.status = status
        record.reason = reason
        record.secret_hash = ""  # moved into the HS_SECKEY on approval; of no use after a rejection
        record.decided_by = actor.label
        record.decided_at = record.updated_at = utcnow()
        self.session.flush()
        detail = f"prefix {record.prefix}" + (f": {reason}" if reason else "")
        self._audit(actor, f"identifiers.filing.{'approve' if status == APPROVED else 'reject'}", record, detail)

    def _audit(self, actor: Principal, action: str, record: Prefix, detail: str) -> None:
        entry = audit.AuditRecord(action=action, object_type="filing", object_id=record.id, detail=detail)
        audit.append(self.session, actor, entry, tenant_id=record.tenant_id)
