"""Use cases of the alarms context: the rule store, the alarm lifecycle, operator actions, history.

Every call is scoped to the acting principal's tenant (platform operators reach every tenant by
id); another tenant's rule or alarm is indistinguishable from a missing one. Reading needs
`alarms.read`; acknowledging, shelving, unshelving, commenting and resetting `alarms.operate`;
rules and taking alarms out of (or back into) service `alarms.write`.

Rules are versioned: each change that alters a rule's spec stores a new version (who, when, what
kind of change) and appends to the audit log; a change that alters nothing stores nothing. Deleting
a rule keeps its versions, and a rule created again under its key continues the numbering.
Disabling or deleting a rule clears the condition of its active alarms (nothing evaluates them any
more); they still need their acknowledgement, or their reset if latched.

`apply` turns what evaluation reports (`ConditionChange`s) into transitions. The whole batch is
applied in the caller's transaction. It is idempotent: each alarm remembers the time (`at_ms`) of
the last condition and suppression change it applied, and skips a change at or before it, so a
redelivered batch, or a replay of older points, records nothing twice.

Each transition is returned as an `AlarmChange` and kept in `AlarmService.changes`: the caller
publishes them on `ALARM_CHANGES` after the transaction commits (`publish_changes`), never before, so
no one hears of a change that was rolled back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from iip.alarms.lifecycle import Action, AlarmSnapshot, HistoryEntry, redundant, transition
from iip.alarms.metrics import HistoryRecord, MetricsReport
from iip.alarms.models import Alarm, AlarmComment, AlarmHistory, Rule, RuleVersion
from iip.alarms.public import ALARM_CHANGES, AlarmChange, AlarmState, Priority
from iip.alarms.repository import AlarmFilter, AlarmRepository, GroupBy
from iip.alarms.rules import (
    ConditionChange,
    ExpressionRule,
    RuleKind,
    RuleSpec,
    VersionedRule,
    parse_rule,
    rule_data,
)
from iip.alarms.schemas import (
    AlarmDetail,
    AlarmGroup,
    AlarmOut,
    AlarmSort,
    CommentOut,
    HistoryOut,
    RuleImportReport,
    RuleOut,
    RuleVersionOut,
)
from iip.kernel import audit
from iip.kernel.auth import Principal, Role, TenantScoped, new_id
from iip.kernel.bus import Bus
from iip.kernel.db import utcnow
from iip.kernel.documents import read_document
from iip.kernel.documents import validation_messages as document_messages
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.kernel.settings import AlarmsSettings

logger = logging.getLogger(__name__)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
SYSTEM = Principal("system", "alarms", "alarms", "", Role.PLATFORM_OPERATOR)
MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
MAX_RULES = 10_000  # rules in one import
MAX_ERRORS = 200
GROUP_DEVICES = 20  # devices named per group
RULE_KINDS = frozenset(kind.value for kind in RuleKind)
Clock = Callable[[], dt.datetime]
SiteLookup = Callable[[str, str], str]  # (tenant id, device key) -> the device's site


@dataclass(slots=True)
class AlarmDraft:
    """An alarm first raised in this batch: `Alarm`'s columns in a plain object, inserted with the
    batch's others in one statement. An ORM object costs more to build and flush than the whole
    transition, which matters in an alarm flood."""

    id: str
    tenant_id: str
    rule_key: str
    rule_version: int
    device: str
    state: str
    latched: bool
    priority: str
    priority_rank: int
    created_at: dt.datetime
    last_change_at: dt.datetime
    shelved: bool = False
    shelved_until: dt.datetime | None = None
    shelved_by: str = ""
    suppressed: bool = False
    out_of_service: bool = False
    position: str = ""
    site: str = ""
    message: str = ""
    value: float | None = None
    condition_ms: int | None = None
    suppression_ms: int | None = None
    first_activated_at: dt.datetime | None = None
    last_activated_at: dt.datetime | None = None
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str = ""
    activation_count: int = 0
    acknowledge_count: int = 0
    sequence: int = 0


AlarmRecord = Alarm | AlarmDraft
DRAFT_COLUMNS = tuple(field.name for field in fields(AlarmDraft))
ALARM_TABLE: Any = Alarm.__table__
HISTORY_TABLE: Any = AlarmHistory.__table__


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """The matching alarms of one device: counts, the most urgent priority, the first rules."""

    device: str
    priority: Priority
    alarms: int
    active: int
    unacknowledged: int
    rules: list[str]


def priority_of_rank(rank: int) -> Priority:
    return next((p for p in Priority if p.rank == rank), Priority.LOW)


def ms_time(at_ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=at_ms)


def time_ms(at: dt.datetime) -> int:
    return (at - EPOCH) // dt.timedelta(milliseconds=1)


# --- views


def snapshot_of(row: AlarmRecord) -> AlarmSnapshot:
    return AlarmSnapshot(
        state=AlarmState(row.state),
        latched=row.latched,
        shelved=row.shelved,
        shelved_until=row.shelved_until,
        shelved_by=row.shelved_by,
        suppressed=row.suppressed,
        out_of_service=row.out_of_service,
        value=row.value,
        message=row.message,
        activation_count=row.activation_count,
        acknowledge_count=row.acknowledge_count,
        first_activated_at=row.first_activated_at,
        last_activated_at=row.last_activated_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        sequence=row.sequence,
        last_change_at=row.last_change_at,
    )


def _store_snapshot(row: AlarmRecord, snapshot: AlarmSnapshot) -> None:
    row.state = snapshot.state.value
    row.latched = snapshot.latched
    row.shelved = snapshot.shelved
    row.shelved_until = snapshot.shelved_until
    row.shelved_by = snapshot.shelved_by[:200]
    row.suppressed = snapshot.suppressed
    row.out_of_service = snapshot.out_of_service
    row.value = snapshot.value
    row.message = snapshot.message[:500]
    row.activation_count = snapshot.activation_count
    row.acknowledge_count = snapshot.acknowledge_count
    row.first_activated_at = snapshot.first_activated_at
    row.last_activated_at = snapshot.last_activated_at
    row.acknowledged_at = snapshot.acknowledged_at
    row.acknowledged_by = snapshot.acknowledged_by[:200]
    row.sequence = snapshot.sequence
    if snapshot.last_change_at is not None and (
        row.last_change_at is None or snapshot.last_change_at > row.last_change_at
    ):
        row.last_change_at = snapshot.last_change_at


def alarm_view(row: Alarm) -> AlarmOut:
    snapshot = snapshot_of(row)
    return AlarmOut(
        id=row.id,
        tenant_id=row.tenant_id,
        rule_key=row.rule_key,
        rule_version=row.rule_version,
        device=row.device,
        state=snapshot.state,
        active=snapshot.active,
        acknowledged=snapshot.acknowledged,
        announced=snapshot.announced,
        latched=row.latched,
        shelved=row.shelved,
        shelved_until=row.shelved_until,
        shelved_by=row.shelved_by,
        suppressed=row.suppressed,
        out_of_service=row.out_of_service,
        priority=Priority(row.priority),
        position=row.position,
        site=row.site,
        message=row.message,
        value=row.value,
        first_activated_at=row.first_activated_at,
        last_activated_at=row.last_activated_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        activation_count=row.activation_count,
        acknowledge_count=row.acknowledge_count,
        sequence=row.sequence,
        created_at=row.created_at,
        last_change_at=row.last_change_at,
    )


def history_view(row: AlarmHistory) -> HistoryOut:
    return HistoryOut(
        alarm_id=row.alarm_id,
        sequence=row.sequence,
        action=row.action,
        state=AlarmState(row.state),
        shelved=row.shelved,
        suppressed=row.suppressed,
        out_of_service=row.out_of_service,
        rule_key=row.rule_key,
        rule_version=row.rule_version,
        device=row.device,
        position=row.position,
        priority=Priority(row.priority),
        value=row.value,
        message=row.message,
        actor=row.actor,
        actor_id=row.actor_id,
        comment=row.comment,
        at=row.at,
    )


def rule_view(row: Rule) -> RuleOut:
    return RuleOut.model_validate(row)


def version_view(row: RuleVersion) -> RuleVersionOut:
    return RuleVersionOut(
        version=row.version, change=row.change, spec=row.spec, created_by=row.created_by, created_at=row.created_at
    )


def change_of(row: AlarmRecord, entry: HistoryEntry) -> AlarmChange:
    return AlarmChange(
        tenant_id=row.tenant_id,
        alarm_id=row.id,
        rule_key=row.rule_key,
        rule_version=row.rule_version,
        device=row.device,
        site=row.site,
        position=row.position,
        priority=Priority(row.priority),
        state=entry.state,
        shelved=entry.shelved,
        suppressed=entry.suppressed,
        out_of_service=entry.out_of_service,
        action=entry.action.value,
        actor=entry.actor,
        message=entry.message,
        value=entry.value,
        at=entry.at,
        sequence=entry.sequence,
    )


# --- rule documents


def validation_messages(err: ValidationError, where: str = "") -> list[str]:
    """Pydantic's errors as `place: message` lines, e.g. `[2].high: ...`."""
    return document_messages(err, where, tags=RULE_KINDS)


def parse_rules_document(data: bytes | str, document_format: str | None = None) -> list[Any]:
    """The rules of a YAML or JSON document: a list of rules, or a mapping with a `rules` list."""
    document = read_document(data, document_format, max_bytes=MAX_DOCUMENT_BYTES)
    if isinstance(document, dict) and set(document) == {"rules"}:
        document = document["rules"]
    if not isinstance(document, list):
        raise Invalid("a rule document is a list of rules (or a mapping with a 'rules' list)", code="invalid_document")
    return document


def check_expressions(spec: RuleSpec) -> list[str]:
    """What is wrong with the rule's expressions (`expression`, `suppress_when`), as `field: message`."""
    from iip.alarms.expressions import compile_expression

    texts = {"suppress_when": spec.suppress_when}
    if isinstance(spec, ExpressionRule):
        texts["expression"] = spec.expression
    errors: list[str] = []
    for name, text in texts.items():
        if text is None:
            continue
        try:
            compile_expression(text)
        except Invalid as err:
            errors.append(f"{name}: {err.message}")
    return errors


def survives_storing(spec: RuleSpec) -> bool:
    """Whether the stored form is JSON that reads back as the same rule (JSON has no infinity or NaN)."""
    data = rule_data(spec)
    try:
        json.dumps(data, allow_nan=False)
        return parse_rule(data) == spec
    except (ValueError, ValidationError):
        return False


def enabled_rules(session: Session, tenant_id: str | None = None) -> list[VersionedRule]:
    """The enabled rules (of a tenant, or of every tenant) at their current version, for evaluation."""
    query = select(Rule).where(Rule.deleted_at.is_(None), Rule.enabled.is_(True))
    if tenant_id is not None:
        query = query.where(Rule.tenant_id == tenant_id)
    rules: list[VersionedRule] = []
    for row in session.scalars(query.order_by(Rule.tenant_id, Rule.key)):
        try:
            rules.append(VersionedRule(row.tenant_id, parse_rule(row.spec), row.version))
        except ValidationError:
            logger.warning("alarm rule %s of tenant %s no longer parses; skipped", row.key, row.tenant_id)
    return rules


# --- the service


class AlarmService(TenantScoped):
    """Rules and alarms of the actor's tenant (every tenant for platform operators)."""

    def __init__(
        self,
        session: Session,
        actor: Principal = SYSTEM,
        *,
        settings: AlarmsSettings | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.session = session
        self.actor = actor
        self.settings = settings or AlarmsSettings()
        self.clock = clock
        self.repo = AlarmRepository(session)
        self.changes: list[AlarmChange] = []  # to publish once the transaction has committed

    # --- scoping

    @property
    def _visible_tenant(self) -> str | None:
        """The tenant reads are limited to; None: every tenant (platform operators)."""
        return None if self.actor.is_platform else self.actor.tenant_id

    def _visible(self, row: Rule | Alarm | None) -> bool:
        return row is not None and self._may_see(row.tenant_id)

    # --- rules

    def list_rules(
        self,
        *,
        enabled: bool | None = None,
        kind: str | None = None,
        pack: str | None = None,
        text: str | None = None,
        tenant_id: str | None = None,
    ) -> list[Rule]:
        self.actor.require("alarms.read")
        return self.repo.rules(self._scope(tenant_id), enabled=enabled, kind=kind, pack=pack, text=text)

    def get_rule(self, ref: str) -> Rule:
        """A rule by id, or by key in the actor's tenant."""
        self.actor.require("alarms.read")
        row = self.repo.rule_by_id(ref)
        if not self._visible(row) or (row is not None and row.deleted_at is not None):
            row = self.repo.rule(self.actor.tenant_id, ref) if self.actor.tenant_id else None
        if row is None or row.deleted_at is not None:
            raise NotFound(f"alarm rule '{ref[:100]}' not found", code="rule_not_found")
        return row

    def create_rule(self, spec: RuleSpec, *, tenant_id: str | None = None) -> Rule:
        self.actor.require("alarms.write")
        tenant = self.tenant_for(tenant_id)
        self._check(spec)
        row = self.repo.rule(tenant, spec.key)
        if row is not None and row.deleted_at is None:
            raise Conflict(f"alarm rule '{spec.key}' already exists", code="rule_exists")
        row = self._store(tenant, row, spec, "create")
        self._audit("create", row)
        return row

    def update_rule(self, ref: str, spec: RuleSpec) -> Rule:
        """A new version of the rule; nothing when the spec is the same as the current one."""
        self.actor.require("alarms.write")
        row = self.get_rule(ref)
        if spec.key != row.key:
            raise Invalid(
                f"the rule's key is '{row.key}', not '{spec.key}': a key cannot change", code="rule_key_changed"
            )
        self._check(spec)
        if rule_data(spec) == row.spec:
            return row
        was_enabled = row.enabled
        self._store(row.tenant_id, row, spec, "update")
        self._audit("update", row)
        if was_enabled and not row.enabled:
            self._clear_alarms_of(row, "the rule was disabled")
        return row

    def set_enabled(self, ref: str, enabled: bool) -> Rule:
        self.actor.require("alarms.write")
        row = self.get_rule(ref)
        if row.enabled == enabled:
            return row
        spec = parse_rule({**row.spec, "enabled": enabled})
        change = "enable" if enabled else "disable"
        self._store(row.tenant_id, row, spec, change)
        self._audit(change, row)
        if not enabled:
            self._clear_alarms_of(row, "the rule was disabled")
        return row

    def delete_rule(self, ref: str) -> Rule:
        """Delete a rule; its versions stay readable, its alarms' conditions are cleared."""
        self.actor.require("alarms.write")
        row = self.get_rule(ref)
        now = self.clock()
        row.deleted_at = now
        row.enabled = False
        row.updated_at = now
        row.updated_by = self.actor.label[:200]
        self.session.flush()
        self._audit("delete", row)
        self._clear_alarms_of(row, "the rule was deleted")
        return row

    def rule_versions(self, ref: str) -> list[RuleVersion]:
        return self.repo.versions(self.get_rule(ref).id)

    def rule_version(self, ref: str, version: int) -> RuleVersion:
        row = self.get_rule(ref)
        found = self.repo.version(row.id, version)
        if found is None:
            raise NotFound(f"alarm rule '{row.key}' has no version {version}", code="rule_version_not_found")
        return found

    def import_rules(self, items: Sequence[Any], *, tenant_id: str | None = None) -> RuleImportReport:
        """Create or update every rule of a list (dicts or parsed specs): all of them, or none.

        Every rule is checked first and every error named with its place (`[3].high: ...`); a rule
        the same as the stored one is left alone, so importing a document again changes nothing.
        """
        self.actor.require("alarms.write")
        tenant = self.tenant_for(tenant_id)
        if not isinstance(items, list | tuple):
            raise Invalid("a rule document is a list of rules", code="invalid_document")
        if len(items) > MAX_RULES:
            raise Invalid(f"a document holds at most {MAX_RULES} rules", code="too_large")
        specs: list[RuleSpec] = []
        errors: list[str] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                spec = _as_spec(item)
            except ValidationError as err:
                errors += validation_messages(err, f"[{index}]")
                continue
            errors += [f"[{index}].{line}" for line in check_expressions(spec)]
            if not survives_storing(spec):
                errors.append(f"[{index}]: a rule's numbers must be finite")
            if spec.key in seen:
                errors.append(f"[{index}].key: '{spec.key}' is also the key of rule [{seen[spec.key]}]")
            seen.setdefault(spec.key, index)
            specs.append(spec)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise Invalid(f"{errors[0]}{more}", code="invalid_rules", errors=errors[:MAX_ERRORS])
        report = RuleImportReport()
        stored = self.repo.rules_by_key(tenant, [spec.key for spec in specs])
        for spec in specs:
            row = stored.get(spec.key)
            if row is not None and row.deleted_at is None:
                if rule_data(spec) == row.spec:
                    report.unchanged.append(spec.key)
                    continue
                was_enabled = row.enabled
                self._store(tenant, row, spec, "import")
                self._audit("import", row)
                if was_enabled and not row.enabled:
                    self._clear_alarms_of(row, "the rule was disabled")
                report.updated.append(spec.key)
            else:
                row = self._store(tenant, row, spec, "import")
                self._audit("import", row)
                report.created.append(spec.key)
        return report

    def export_rules(self, *, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """The rules of a tenant (the actor's own by default) as an import document takes them."""
        self.actor.require("alarms.read")
        tenant = tenant_id if self.actor.is_platform and tenant_id else self.actor.tenant_id
        return [dict(row.spec) for row in self.repo.rules(tenant)]

    def versioned_rules(self, *, tenant_id: str | None = None) -> list[VersionedRule]:
        self.actor.require("alarms.read")
        return enabled_rules(self.session, self._scope(tenant_id))

    def _check(self, spec: RuleSpec) -> None:
        errors = check_expressions(spec)
        if errors:
            raise Invalid(errors[0], code="expression_invalid", errors=errors)
        if not survives_storing(spec):
            raise Invalid("a rule's numbers must be finite", code="invalid_rule")

    def _store(self, tenant_id: str, row: Rule | None, spec: RuleSpec, change: str) -> Rule:
        """Store `spec` as the next version of the rule (a new rule when `row` is None)."""
        now = self.clock()
        if row is None:
            row = Rule(id=new_id(), tenant_id=tenant_id, key=spec.key, version=0, created_at=now)
            self.session.add(row)
        elif row.deleted_at is not None:
            row.deleted_at = None
            row.created_at = now
        data = rule_data(spec)
        row.version += 1
        row.kind = spec.kind.value
        row.title = spec.title
        row.priority = spec.priority.value
        row.pack = spec.pack[:100]
        row.enabled = spec.enabled
        row.spec = data
        row.updated_at = now
        row.updated_by = self.actor.label[:200]
        self.session.add(
            RuleVersion(
                id=new_id(),
                rule_id=row.id,
                tenant_id=tenant_id,
                version=row.version,
                change=change,
                spec=data,
                created_by=self.actor.label[:200],
                created_at=now,
            )
        )
        self.session.flush()
        return row

    def _audit(self, change: str, row: Rule) -> None:
        audit.append(
            self.session,
            self.actor,
            audit.AuditRecord(
                action=f"alarms.rule.{change}",
                object_type="alarm_rule",
                object_id=row.id,
                detail=f"{row.key} version {row.version}" + (" (deleted)" if row.deleted_at else ""),
                source="alarms",
            ),
            tenant_id=row.tenant_id,
        )

    def _clear_alarms_of(self, rule: Rule, reason: str) -> None:
        now = self.clock()
        for alarm in self.repo.alarms_of_rule(rule.tenant_id, rule.key):
            snapshot = snapshot_of(alarm)
            if redundant(snapshot, Action.CLEAR):
                continue
            after, entry = transition(snapshot, Action.CLEAR, at=now, actor=self.actor.label, comment=reason)
            alarm.condition_ms = max(alarm.condition_ms or 0, time_ms(now))
            self._record(alarm, after, entry)

    # --- the process: condition changes from evaluation

    def apply(
        self,
        changes: Sequence[ConditionChange],
        *,
        sites: SiteLookup | None = None,
        known: Mapping[tuple[str, str, int], RuleSpec] | None = None,
    ) -> list[AlarmChange]:
        """Apply a batch of condition and suppression changes in the caller's transaction.

        A change at or before the last one applied to its alarm (same `at_ms`: a redelivery) is
        skipped, as is one that changes nothing. A change naming a rule version that is not stored
        is applied with the rule's current version; one naming a rule not stored at all is skipped
        (logged): it must not block the rest of the batch. `known` gives specs the caller has parsed
        already, by (tenant, rule key, version): a stored version never changes, so those are
        neither read nor parsed again.
        """
        applied: list[AlarmChange] = []
        by_tenant: dict[str, list[ConditionChange]] = {}
        for change in changes:
            by_tenant.setdefault(change.tenant_id, []).append(change)
        drafts: list[AlarmDraft] = []
        history: list[dict[str, Any]] = []
        for tenant, items in by_tenant.items():
            alarms: dict[tuple[str, str], AlarmRecord] = dict(
                self.repo.alarms_for(tenant, [(c.rule_key, c.device) for c in items])
            )
            parsed: dict[tuple[str, int], tuple[int, RuleSpec | None]] = {}
            if known:
                for c in items:
                    spec = known.get((tenant, c.rule_key, c.rule_version))
                    if spec is not None:
                        parsed[c.rule_key, c.rule_version] = (c.rule_version, spec)
            specs = self.repo.version_specs(
                tenant, [(c.rule_key, c.rule_version) for c in items if (c.rule_key, c.rule_version) not in parsed]
            )
            # The rule rows only for changes naming a version that is not stored.
            current = self.repo.rules_by_key(
                tenant,
                sorted(
                    {
                        c.rule_key
                        for c in items
                        if (c.rule_key, c.rule_version) not in specs and (c.rule_key, c.rule_version) not in parsed
                    }
                ),
            )
            for change in items:
                result = self._apply_one(change, alarms, specs, current, sites, parsed, drafts, history)
                if result is not None:
                    applied.append(result)
        # New alarms before their history (its foreign key); each as one executemany of plain rows.
        if drafts:
            rows = [{name: getattr(draft, name) for name in DRAFT_COLUMNS} for draft in drafts]
            self.session.execute(insert(ALARM_TABLE), rows)
        if history:
            self.session.execute(insert(HISTORY_TABLE), history)
        return applied

    def _apply_one(  # noqa: PLR0911 - each way a change is skipped is a return of its own
        self,
        change: ConditionChange,
        alarms: dict[tuple[str, str], AlarmRecord],
        specs: Mapping[tuple[str, int], dict[str, Any]],
        current: Mapping[str, Rule],
        sites: SiteLookup | None,
        parsed: dict[tuple[str, int], tuple[int, RuleSpec | None]],
        drafts: list[AlarmDraft],
        history: list[dict[str, Any]],
    ) -> AlarmChange | None:
        if (change.active is None) == (change.suppressed is None):
            logger.warning(
                "condition change of %s/%s names neither or both of active and suppressed; skipped",
                change.rule_key,
                change.device,
            )
            return None
        if not 0 <= change.at_ms <= LAST_MS:
            logger.warning(
                "condition change of %s/%s at %s ms is out of range; skipped",
                change.rule_key,
                change.device,
                change.at_ms,
            )
            return None
        version, spec = self._rule_for(change, specs, current, parsed)
        if spec is None:
            logger.warning(
                "condition change for unknown rule %s of tenant %s; skipped", change.rule_key, change.tenant_id
            )
            return None
        if change.active is not None:
            action = Action.ACTIVATE if change.active else Action.CLEAR
        else:
            action = Action.SUPPRESS if change.suppressed else Action.UNSUPPRESS
        key = (change.rule_key, change.device)
        alarm = alarms.get(key)
        if alarm is None:
            if action in (Action.CLEAR, Action.UNSUPPRESS):
                return None  # nothing was raised
            draft = self._new_alarm(change, version, spec)
            drafts.append(draft)
            alarm = alarms[key] = draft
        condition = action in (Action.ACTIVATE, Action.CLEAR)
        last = alarm.condition_ms if condition else alarm.suppression_ms
        if last is not None and change.at_ms <= last:
            return None  # applied already (a redelivery), or older than what was
        if condition:
            alarm.condition_ms = change.at_ms
        else:
            alarm.suppression_ms = change.at_ms
        snapshot = snapshot_of(alarm)
        if redundant(snapshot, action):
            return None
        if version >= alarm.rule_version:
            self._describe(alarm, version, spec, sites)
        # Evaluation fills the rule's message in; without one, the title names the alarm.
        message = change.message or (spec.title if action is Action.ACTIVATE else None)
        after, entry = transition(
            snapshot,
            action,
            at=ms_time(change.at_ms),
            value=change.value,
            message=message or None,
            latched=spec.latched if action is Action.ACTIVATE else None,
        )
        return self._record(alarm, after, entry, history)

    def _rule_for(
        self,
        change: ConditionChange,
        specs: Mapping[tuple[str, int], dict[str, Any]],
        current: Mapping[str, Rule],
        parsed: dict[tuple[str, int], tuple[int, RuleSpec | None]],
    ) -> tuple[int, RuleSpec | None]:
        """The rule version and spec a change is applied with, parsed once per batch."""
        wanted = (change.rule_key, change.rule_version)
        found = parsed.get(wanted)
        if found is None:
            found = parsed[wanted] = self._parse_rule_for(change, specs, current)
        return found

    @staticmethod
    def _parse_rule_for(
        change: ConditionChange, specs: Mapping[tuple[str, int], dict[str, Any]], current: Mapping[str, Rule]
    ) -> tuple[int, RuleSpec | None]:
        data = specs.get((change.rule_key, change.rule_version))
        version = change.rule_version
        if data is None:
            row = current.get(change.rule_key)
            if row is None:
                return version, None
            data, version = row.spec, row.version
        try:
            return version, parse_rule(data)
        except ValidationError:
            return version, None

    def _new_alarm(self, change: ConditionChange, version: int, spec: RuleSpec) -> AlarmDraft:
        return AlarmDraft(
            id=new_id(),
            tenant_id=change.tenant_id,
            rule_key=change.rule_key,
            rule_version=version,
            device=change.device,
            state=AlarmState.NORMAL.value,
            latched=spec.latched,
            priority=spec.priority.value,
            priority_rank=spec.priority.rank,
            created_at=self.clock(),
            last_change_at=ms_time(change.at_ms),
        )

    @staticmethod
    def _describe(alarm: AlarmRecord, version: int, spec: RuleSpec, sites: SiteLookup | None) -> None:
        """The rule's metadata in force: version, priority, site and operator position."""
        alarm.rule_version = version
        alarm.priority = spec.priority.value
        alarm.priority_rank = spec.priority.rank
        if sites is not None:
            alarm.site = sites(alarm.tenant_id, alarm.device)[:200]
        alarm.position = (spec.position or alarm.site)[:100]

    def _record(
        self, alarm: AlarmRecord, after: AlarmSnapshot, entry: HistoryEntry, batch: list[dict[str, Any]] | None = None
    ) -> AlarmChange:
        """Store the transition on the alarm and in its history (in `batch`, to insert with others)."""
        _store_snapshot(alarm, after)
        row = {
            "alarm_id": alarm.id,
            "tenant_id": alarm.tenant_id,
            "sequence": entry.sequence,
            "action": entry.action.value,
            "state": entry.state.value,
            "shelved": entry.shelved,
            "suppressed": entry.suppressed,
            "out_of_service": entry.out_of_service,
            "rule_key": alarm.rule_key,
            "rule_version": alarm.rule_version,
            "device": alarm.device,
            "position": alarm.position,
            "priority": alarm.priority,
            "value": entry.value,
            "message": entry.message[:500],
            "actor": entry.actor[:200],
            "actor_id": self.actor.id if entry.actor else "",
            "comment": entry.comment,
            "at": entry.at,
        }
        if batch is not None:
            batch.append(row)
        else:
            self.session.add(AlarmHistory(**row))
        if entry.comment and entry.actor:
            self.session.add(
                AlarmComment(
                    id=new_id(),
                    alarm_id=alarm.id,
                    tenant_id=alarm.tenant_id,
                    sequence=entry.sequence,
                    author=entry.actor[:200],
                    author_id=self.actor.id,
                    text=entry.comment,
                    at=entry.at,
                )
            )
        change = change_of(alarm, entry)
        self.changes.append(change)
        return change

    # --- operator actions

    def _locked_alarm(self, alarm_id: str) -> Alarm:
        rows = self.repo.alarms_by_id([alarm_id], lock=True)
        row = rows[0] if rows else None
        if row is None or not self._visible(row):
            raise NotFound(f"alarm '{alarm_id[:32]}' not found", code="alarm_not_found")
        return row

    def _act(
        self,
        alarm_id: str,
        action: Action,
        permission: str,
        *,
        comment: str = "",
        at: dt.datetime | None = None,
        **arguments: Any,
    ) -> Alarm:
        self.actor.require(permission)
        alarm = self._locked_alarm(alarm_id)
        after, entry = transition(
            snapshot_of(alarm), action, at=at or self.clock(), actor=self.actor.label, comment=comment, **arguments
        )
        self._record(alarm, after, entry)
        self.session.flush()
        return alarm

    def acknowledge(self, alarm_id: str, comment: str = "") -> Alarm:
        return self._act(alarm_id, Action.ACKNOWLEDGE, "alarms.operate", comment=comment)

    def acknowledge_many(self, alarm_ids: Sequence[str], comment: str = "") -> tuple[list[str], list[str]]:
        """Acknowledge every alarm named that needs it: (acknowledged, skipped) ids.

        All or nothing: an id that names no alarm of the tenant refuses the whole call.
        """
        self.actor.require("alarms.operate")
        wanted = list(dict.fromkeys(alarm_ids))
        rows = {row.id: row for row in self.repo.alarms_by_id(wanted, lock=True) if self._visible(row)}
        missing = [alarm_id for alarm_id in wanted if alarm_id not in rows]
        if missing:
            raise NotFound(f"alarm '{missing[0][:32]}' not found", code="alarm_not_found", missing=missing[:100])
        acknowledged: list[str] = []
        skipped: list[str] = []
        at = self.clock()
        for alarm_id in wanted:
            row = rows[alarm_id]
            snapshot = snapshot_of(row)
            if snapshot.acknowledged:
                skipped.append(alarm_id)
                continue
            after, entry = transition(snapshot, Action.ACKNOWLEDGE, at=at, actor=self.actor.label, comment=comment)
            self._record(row, after, entry)
            acknowledged.append(alarm_id)
        self.session.flush()
        return acknowledged, skipped

    def shelve(self, alarm_id: str, duration: dt.timedelta, reason: str) -> Alarm:
        if not reason.strip():
            raise Invalid("shelving needs a reason")
        at = self.clock()
        return self._act(
            alarm_id,
            Action.SHELVE,
            "alarms.operate",
            comment=reason,
            at=at,
            shelve_until=at + duration,
            max_shelve=dt.timedelta(hours=self.settings.max_shelve_hours),
        )

    def unshelve(self, alarm_id: str, comment: str = "") -> Alarm:
        return self._act(alarm_id, Action.UNSHELVE, "alarms.operate", comment=comment)

    def comment(self, alarm_id: str, text: str) -> Alarm:
        return self._act(alarm_id, Action.COMMENT, "alarms.operate", comment=text)

    def reset(self, alarm_id: str, comment: str = "") -> Alarm:
        return self._act(alarm_id, Action.RESET, "alarms.operate", comment=comment)

    def remove_from_service(self, alarm_id: str, comment: str = "") -> Alarm:
        return self._act(alarm_id, Action.REMOVE_FROM_SERVICE, "alarms.write", comment=comment)

    def return_to_service(self, alarm_id: str, comment: str = "") -> Alarm:
        return self._act(alarm_id, Action.RETURN_TO_SERVICE, "alarms.write", comment=comment)

    def expire_shelves(self, now: dt.datetime | None = None) -> list[AlarmChange]:
        """Unshelve every alarm (of every tenant) whose shelving ended at or before `now`."""
        at = now or self.clock()
        expired: list[AlarmChange] = []
        for alarm in self.repo.shelves_expired(at):
            until = alarm.shelved_until
            after, entry = transition(
                snapshot_of(alarm),
                Action.UNSHELVE,
                at=at,
                comment=f"shelving expired at {until.isoformat() if until else at.isoformat()}",
            )
            expired.append(self._record(alarm, after, entry))
        self.session.flush()
        return expired

    # --- reads

    def get_alarm(self, alarm_id: str) -> Alarm:
        self.actor.require("alarms.read")
        row = self.repo.alarm_by_id(alarm_id)
        if row is None or not self._visible(row):
            raise NotFound(f"alarm '{alarm_id[:32]}' not found", code="alarm_not_found")
        return row

    def describe_alarm(self, row: Alarm) -> AlarmDetail:
        comments = [
            CommentOut(sequence=c.sequence, author=c.author, author_id=c.author_id, text=c.text, at=c.at)
            for c in self.repo.comments(row.id)
        ]
        return AlarmDetail(**alarm_view(row).model_dump(), comments=comments)

    def list_alarms(
        self,
        where: AlarmFilter,
        *,
        sort: AlarmSort = AlarmSort.PRIORITY,
        offset: int = 0,
        limit: int = 100,
        tenant_id: str | None = None,
    ) -> tuple[list[Alarm], int]:
        self.actor.require("alarms.read")
        return self.repo.alarms(self._scope(tenant_id), where, sort=sort, offset=offset, limit=limit)

    def group_alarms(
        self, where: AlarmFilter, *, tenant_id: str | None = None, offset: int = 0, limit: int | None = None
    ) -> list[AlarmGroup]:
        """The alarms matching `where`, counted per rule, busiest rule first (a page of them, if asked)."""
        self.actor.require("alarms.read")
        scope = self._scope(tenant_id)
        groups = self.repo.groups(scope, where, offset=offset, limit=limit)
        devices = self.repo.group_devices(scope, where, [g[0] for g in groups], GROUP_DEVICES)
        return [
            AlarmGroup(
                rule_key=key,
                priority=priority_of_rank(rank),
                alarms=count,
                active=active,
                unacknowledged=unacknowledged,
                devices=devices.get(key, []),
            )
            for key, count, active, unacknowledged, rank in groups
        ]

    def group_alarms_by_device(
        self, where: AlarmFilter, *, tenant_id: str | None = None, offset: int = 0, limit: int | None = None
    ) -> list[DeviceGroup]:
        """The alarms matching `where`, counted per device, busiest device first (a page of them, if asked)."""
        self.actor.require("alarms.read")
        scope = self._scope(tenant_id)
        groups = self.repo.groups(scope, where, by="device", offset=offset, limit=limit)
        rules = self.repo.group_rules(scope, where, [g[0] for g in groups], GROUP_DEVICES)
        return [
            DeviceGroup(device, priority_of_rank(rank), count, active, unacknowledged, rules.get(device, []))
            for device, count, active, unacknowledged, rank in groups
        ]

    def count_groups(self, where: AlarmFilter, *, by: GroupBy = "rule", tenant_id: str | None = None) -> int:
        """How many rules (or devices) have alarms matching `where`."""
        self.actor.require("alarms.read")
        return self.repo.group_count(self._scope(tenant_id), where, by=by)

    def alarm_history(self, alarm_id: str, *, offset: int = 0, limit: int = 100) -> tuple[list[AlarmHistory], int]:
        return self.repo.history(self.get_alarm(alarm_id).id, offset=offset, limit=limit)

    def tenant_history(
        self,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        offset: int = 0,
        limit: int = 100,
        tenant_id: str | None = None,
        device: str | None = None,
        rule_key: str | None = None,
    ) -> tuple[list[AlarmHistory], int]:
        """The history of the tenant's alarms in [start, end), newest first (of one device, one rule)."""
        self.actor.require("alarms.read")
        if start is not None and end is not None and end <= start:
            raise Invalid("end must be after start")
        return self.repo.tenant_history(
            self._scope(tenant_id), start=start, end=end, offset=offset, limit=limit, device=device, rule_key=rule_key
        )

    def history_records(
        self, start: dt.datetime, end: dt.datetime, *, tenant_id: str | None = None
    ) -> Iterator[HistoryRecord]:
        """The history the alarm metrics read: every entry in [start, end), and per alarm its newest
        entry and newest activation before `start` (so alarms standing at `start` are known)."""
        self.actor.require("alarms.read")
        scope = self._scope(tenant_id)
        for row in self.repo.history_before(scope, start):
            yield HistoryRecord(
                row.alarm_id,
                row.rule_key,
                row.device,
                row.position,
                Priority(row.priority),
                row.action,
                AlarmState(row.state),
                row.at,
            )
        for alarm_id, rule_key, device, position, priority, action, state, at in self.repo.history_between(
            scope, start, end
        ):
            yield HistoryRecord(alarm_id, rule_key, device, position, Priority(priority), action, AlarmState(state), at)

    def metrics(self, start: dt.datetime, end: dt.datetime, *, tenant_id: str | None = None) -> MetricsReport:
        """ISA-18.2 alarm management metrics of the history in [start, end)."""
        from iip.alarms.metrics import compute

        if start.tzinfo is None or end.tzinfo is None:
            raise Invalid("give start and end with a time zone")
        if end <= start:
            raise Invalid("end must be after start")
        return compute(self.history_records(start, end, tenant_id=tenant_id), start=start, end=end)


def _as_spec(item: Any) -> RuleSpec:
    if isinstance(item, dict):
        return parse_rule(item)
    if hasattr(item, "kind") and hasattr(item, "key"):
        return parse_rule(rule_data(item))
    return parse_rule(item)  # raises the readable error


# --- publishing


async def publish_changes(bus: Bus, changes: Iterable[AlarmChange]) -> None:
    """Publish committed changes on `ALARM_CHANGES`; each message id names the alarm and its sequence
    number, so a repeated publication is dropped by the bus's duplicate window."""
    for change in changes:
        await bus.publish(ALARM_CHANGES, change, message_id=f"alarm:{change.alarm_id}:{change.sequence}")
