"""ORM models of the model registry (tables prefixed `analytics_`).

`analytics_model` names a model of a tenant; `analytics_model_version` holds each trained version:
what it is (kind, variables and where they come from, parameters), how it was trained (data source
and range, who, when), how good it is (metrics) and its state, an `.npz` file of plain numeric
arrays and JSON (never a pickle). `analytics_deployment` records a version scoring a device's live
stream, from deployment to retirement, with its settings (a RUL model's alarm threshold and cycle,
a monitor's fault classifier, how long a variable's last value may be held).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iip.kernel.db import Base, utcnow

NAME_LENGTH = 100
KIND_LENGTH = 40
DEVICE_LENGTH = 200  # a device key, as telemetry keeps it
ACTOR_LENGTH = 200  # a principal label, as the audit log names it


class Model(Base):
    """A named model of one tenant; its versions are numbered 1, 2, ..."""

    __tablename__ = "analytics_model"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))  # of the newest version
    description: Mapped[str] = mapped_column(String(500), default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """One trained version: kind, variables, parameters, metrics, training data, state and status."""

    __tablename__ = "analytics_model_version"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("analytics_model.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))
    status: Mapped[str] = mapped_column(String(10))  # trained, deployed, retired
    variables: Mapped[list[str]] = mapped_column(JSON)
    # Per variable, the series it reads live: {"variable", "device" ("" = the device deployed to), "metric"}.
    sources: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)  # as asked for training
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)  # what the fitted model reports of itself
    limits: Mapped[dict[str, float]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    data_source: Mapped[dict[str, Any]] = mapped_column(JSON)  # telemetry range or file, rows
    state: Mapped[bytes] = mapped_column(LargeBinary)
    state_sha256: Mapped[str] = mapped_column(String(64))
    trained_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    trained_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retired_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    retired_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Deployment(Base):
    """A version scoring one device's live stream, while `active`."""

    __tablename__ = "analytics_deployment"
    __table_args__ = (
        Index("ix_analytics_deployment_tenant_id_device", "tenant_id", "device"),
        Index("ix_analytics_deployment_model_id_device", "model_id", "device"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(ForeignKey("analytics_model.id", ondelete="CASCADE"))
    version_id: Mapped[str] = mapped_column(ForeignKey("analytics_model_version.id", ondelete="CASCADE"), index=True)
    device: Mapped[str] = mapped_column(String(DEVICE_LENGTH))
    active: Mapped[bool] = mapped_column(default=True)
    deployed_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    deployed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retired_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    retired_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # rul_threshold, interval_ms, since_ms (RUL); classifier_version_id (monitors); staleness_s (both).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Moves on every change: the live scorers reload when the newest value moves.
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
