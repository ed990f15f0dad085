"""The model registry on SQLite and PostgreSQL: versions, metrics, safe state, training data, lifecycle, audit."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from iip.analytics.models import Deployment, Model, ModelVersion
from iip.analytics.monitoring import ModelStateError, ScoringDataError, TrainingDataError
from iip.analytics.scoring import ScoringRunner
from iip.analytics.service import AnalyticsService
from iip.kernel.audit import AuditEntry
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound
from iip.kernel.runtime import Runtime
from iip.telemetry.public import PointBatchBuilder, Quality, store_points
from tests.analytics.support import (
    RUL_QUICK,
    RUL_VARIABLES,
    VARIABLES,
    csv_bytes,
    engineer,
    faulty,
    normal_data,
    rul_fleet_csv,
    viewer,
)
from tests.conftest import TenantFixture

START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
START_MS = int(START.timestamp() * 1000)


def service(runtime: Runtime, session: Any, tenant: TenantFixture) -> AnalyticsService:
    return AnalyticsService(session, engineer(tenant), runtime=runtime)


def train_file(
    runtime: Runtime, tenant: TenantFixture, data: np.ndarray[Any, Any], name: str = "reactor", **kw: Any
) -> str:
    with runtime.db.session() as session:
        return service(runtime, session, tenant).train_from_file(name, "pca", csv_bytes(data), "normal.csv", **kw).id


def counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.db.session() as session:
        models = session.scalar(select(func.count(Model.id))) or 0
        versions = session.scalar(select(func.count(ModelVersion.id))) or 0
        return models, versions


def store_series(
    runtime: Runtime, tenant: TenantFixture, device: str, data: np.ndarray[Any, Any], *, step_ms: int = 10_000
) -> None:
    builder = PointBatchBuilder(tenant.id, "test")
    for i, row in enumerate(data.tolist()):
        for name, value in zip(VARIABLES, row, strict=True):
            builder.add(device, name, START_MS + i * step_ms, value)
    store_points(runtime, builder.build())


# --- versions, metrics, state


def test_a_model_gets_numbered_versions_with_metrics_and_training_data(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    data = normal_data(300)
    first = train_file(runtime, tenant_a, data, description="reactor R-101")
    second = train_file(runtime, tenant_a, normal_data(300, seed=8), parameters={"components": 2})
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        [model] = svc.list_models()
        assert (model.name, model.kind, model.latest_version, model.description) == (
            "reactor",
            "pca",
            2,
            "reactor R-101",
        )
        v1, v2 = svc.versions(model)
        assert (v1.id, v1.version, v2.id, v2.version) == (first, 1, second, 2)
        assert v1.status == v2.status == "trained"
        assert v1.variables == list(VARIABLES)
        assert v1.sources[2] == {"variable": "flow", "device": "", "metric": "flow"}
        assert v1.data_source == {
            "type": "file",
            "name": "normal.csv",
            "format": "csv",
            "sha256": hashlib.sha256(csv_bytes(data)).hexdigest(),
            "rows": 300,
        }
        # Fitted on the first 240 rows, measured on the 60 it never saw.
        assert v1.metrics["training_rows"] == 240
        assert v1.metrics["held_out_rows"] == 60
        assert 0.0 <= v1.metrics["false_alarm_rate"] <= 0.1
        assert v1.metrics["explained_variance"] > 0.9
        assert v2.parameters["components"] == 2
        assert v2.summary["components"] == 2
        assert v1.trained_by == "user:tenant-a-engineer"
        assert svc.get_version("reactor").id == second  # the newest by default
        # The stored state is the model: it scores exactly as the limits it was stored with say.
        monitor = svc.load(v1)
        assert monitor.limits == v1.limits
        assert v1.state_sha256 == hashlib.sha256(v1.state).hexdigest()
        scores = monitor.score(faulty(data[:20], shift=4.0))
        assert scores.alarm.mean() > 0.9
    with runtime.db.session() as session:
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.tenant_id == tenant_a.id)).all()
    assert actions.count("analytics.model.train") == 2


UNPICKLED: list[str] = []


def record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Payload:
    """Unpickling it calls `record_unpickling`: proof that a loader opened it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (record_unpickling, ("opened",))


def test_a_state_holding_a_pickled_object_is_refused_unopened(runtime: Runtime, tenant_a: TenantFixture) -> None:
    version_id = train_file(runtime, tenant_a, normal_data(200))
    with runtime.db.session() as session:
        row = session.get(ModelVersion, version_id)
        assert row is not None
        with np.load(io.BytesIO(row.state), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, payload=np.array([Payload()], dtype=object))
        poisoned = buffer.getvalue()
        row.state = poisoned
    UNPICKLED.clear()
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        with pytest.raises(ModelStateError, match="Object arrays cannot be loaded"):
            svc.load(svc.get_version("reactor", 1))
    assert UNPICKLED == []
    # The control: a loader that allows pickles runs the payload.
    with np.load(io.BytesIO(poisoned), allow_pickle=True) as archive:
        archive["payload"]
    assert UNPICKLED == ["opened"]


# --- training data and its errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"temp,pressure,flow\n1,2,3\n4,,6\n", "missing value at row 2 (line 3), column 'pressure'"),
        (b"temp,pressure,flow\n1,2,3\n4,x5,6\n", "non-numeric value 'x5' at row 2 (line 3), column 'pressure'"),
        (b"temp,pressure,flow\n1,2,3\n4,5\n", "mismatched columns: row 2 (line 3) has 2 cells, the header names 3"),
        (b"temp,pressure,temp\n1,2,3\n", "column named twice in 'data.csv': temp"),
        (b"", "'data.csv' is empty"),
        ("t\xe9mp,flow\n1,2\n".encode("latin-1"), "'data.csv' cannot be read as CSV: not UTF-8 text (byte 1)"),
    ],
)
def test_unusable_training_files_are_refused_naming_the_problem(
    runtime: Runtime, tenant_a: TenantFixture, content: bytes, message: str
) -> None:
    with runtime.db.session() as session, pytest.raises(TrainingDataError) as caught:
        service(runtime, session, tenant_a).train_from_file("m", "pca", content, "data.csv")
    assert message in caught.value.message
    assert counts(runtime) == (0, 0)


def test_constant_too_few_and_mismatched_columns_are_named(runtime: Runtime, tenant_a: TenantFixture) -> None:
    data = normal_data(100)
    constant = data.copy()
    constant[:, 3] = 2.0
    huge = data.copy()
    huge[:, 0] *= 1e300
    cases = [
        (csv_bytes(huge).replace(b".000000,", b","), {}, "training data values are too large to model"),
        (csv_bytes(data), {"parameters": {"components": 2.5}}, "parameter 'components' must be a whole number"),
        (csv_bytes(constant), {}, "constant columns in training data (no variation to model), variables: level"),
        (csv_bytes(data[:8]), {}, "too few rows in training data"),
        (csv_bytes(data), {"variables": ["temp", "vibration"]}, "mismatched columns: 'vibration' not in 'data.csv'"),
    ]
    for content, options, message in cases:
        with runtime.db.session() as session, pytest.raises(TrainingDataError) as caught:
            service(runtime, session, tenant_a).train_from_file("m", "pca", content, "data.csv", **options)
        assert message in caught.value.message
    with runtime.db.session() as session, pytest.raises(Invalid, match="unknown model kind 'pls'"):
        service(runtime, session, tenant_a).train_from_file("m", "pls", csv_bytes(data), "data.csv")
    with runtime.db.session() as session, pytest.raises(TrainingDataError, match="'folds' must be between 2 and 50"):
        service(runtime, session, tenant_a).train_from_file(
            "m", "pca", csv_bytes(data), "data.csv", parameters={"folds": 10**9}
        )
    with runtime.db.session() as session, pytest.raises(TrainingDataError, match="unknown parameters for pca: lags"):
        service(runtime, session, tenant_a).train_from_file(
            "m", "pca", csv_bytes(data), "data.csv", parameters={"lags": 2}
        )
    assert counts(runtime) == (0, 0)


def test_a_parquet_file_with_a_time_column_trains_like_its_csv(runtime: Runtime, tenant_a: TenantFixture) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = normal_data(200)
    times = [START + dt.timedelta(seconds=i) for i in range(200)]
    table = pa.table(
        {"time": pa.array(times, pa.timestamp("ms", tz="UTC")), **dict(zip(VARIABLES, data.T, strict=True))}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with runtime.db.session() as session:
        row = service(runtime, session, tenant_a).train_from_file("m", "dpca", buffer.getvalue(), "run.parquet")
        assert row.variables == list(VARIABLES)
        assert row.data_source["format"] == "parquet"
        assert (row.data_source["start"], row.data_source["end"]) == (
            "2026-01-05T08:00:00.000Z",
            "2026-01-05T08:03:19.000Z",
        )
        assert row.summary["lags"] == 1


def test_telemetry_is_read_on_a_grid_and_gaps_are_refused(runtime: Runtime, tenant_a: TenantFixture) -> None:
    data = normal_data(120)
    store_series(runtime, tenant_a, "r-101", data)
    end = START + dt.timedelta(seconds=1200)
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        row = svc.train_from_telemetry(
            "reactor", "pca", devices=["r-101"], metrics=list(VARIABLES), start=START, end=end, interval_s=10
        )
        assert row.variables == list(VARIABLES)
        assert row.sources[0] == {"variable": "temp", "device": "", "metric": "temp"}
        assert row.data_source == {
            "type": "telemetry",
            "devices": ["r-101"],
            "metrics": sorted(VARIABLES),
            "start": "2026-01-05T08:00:00.000Z",
            "end": "2026-01-05T08:20:00.000Z",
            "interval_ms": 10_000,
            "rows": 120,
        }
        # The stored state scores the same rows as the file would: nothing was filled in or shifted.
        expected = svc.load(row).score(data)
        evaluation = svc.evaluate_telemetry(row, device="r-101", start=START, end=end)
        np.testing.assert_allclose(evaluation.scores.statistics["t2"], expected.statistics["t2"])
    # A bad point counts as absent: the grid step it was alone in is a gap, named with its time.
    builder = PointBatchBuilder(tenant_a.id, "test")
    builder.add("r-101", "flow", START_MS + 1_200_000, 1.0, Quality.BAD)
    for name, value in zip(VARIABLES, data[0].tolist(), strict=True):
        if name != "flow":
            builder.add("r-101", name, START_MS + 1_200_000, value)
    store_points(runtime, builder.build())
    with runtime.db.session() as session, pytest.raises(TrainingDataError) as caught:
        service(runtime, session, tenant_a).train_from_telemetry(
            "reactor",
            "pca",
            devices=["r-101"],
            metrics=list(VARIABLES),
            start=START,
            end=end + dt.timedelta(seconds=10),
            interval_s=10,
        )
    assert caught.value.message.startswith(
        "gap in 'flow': no good point between 2026-01-05T08:20:00.000Z and 2026-01-05T08:20:10.000Z"
    )
    with runtime.db.session() as session, pytest.raises(TrainingDataError, match="no stored points of 'torque'"):
        service(runtime, session, tenant_a).train_from_telemetry(
            "reactor", "pca", devices=["r-101"], metrics=["temp", "torque"], start=START, end=end, interval_s=10
        )


def test_several_devices_give_device_qualified_variables(runtime: Runtime, tenant_a: TenantFixture) -> None:
    store_series(runtime, tenant_a, "r-1", normal_data(60, seed=1))
    store_series(runtime, tenant_a, "r-2", normal_data(60, seed=2))
    with runtime.db.session() as session:
        row = service(runtime, session, tenant_a).train_from_telemetry(
            "pair",
            "pca",
            devices=["r-1", "r-2"],
            metrics=["temp", "flow"],
            start=START,
            end=START + dt.timedelta(minutes=10),
            interval_s=10,
            holdout=0.0,
        )
        assert row.variables == ["r-1/temp", "r-1/flow", "r-2/temp", "r-2/flow"]
        assert row.sources[3] == {"variable": "r-2/flow", "device": "r-2", "metric": "flow"}
        assert "held_out_rows" not in row.metrics
        assert row.metrics["training_rows"] == 60


# --- scoring and contributions


def test_scoring_flags_a_missing_variable_and_explains_a_fault(runtime: Runtime, tenant_a: TenantFixture) -> None:
    data = normal_data(300)
    train_file(runtime, tenant_a, data)
    center = dict(zip(VARIABLES, data.mean(axis=0).tolist(), strict=True))
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        version = svc.get_version("reactor")
        lacking = {k: v for k, v in center.items() if k != "level"}
        scores, missing = svc.score(version, [center, lacking, {**center, "flow": center["flow"] + 4.0}])
        assert scores.valid.tolist() == [True, False, True]
        assert missing == [[], ["level"], []]
        assert np.isnan(scores.statistics["t2"][1])
        assert scores.alarm.tolist() == [False, False, True]
        with pytest.raises(ScoringDataError, match="unknown variables: vibration"):
            svc.score(version, [{**center, "vibration": 1.0}])
        found = svc.contributions(
            version, svc.samples_table(version, [center, {**center, "flow": center["flow"] + 4.0}])
        )
        assert found.row == 1
        assert found.top["spe"][0] == "flow"


# --- deployment lifecycle


def test_deploy_replace_and_retire_move_the_status_and_are_audited(runtime: Runtime, tenant_a: TenantFixture) -> None:
    train_file(runtime, tenant_a, normal_data(200))
    train_file(runtime, tenant_a, normal_data(200, seed=9))
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        v1, v2 = svc.get_version("reactor", 1), svc.get_version("reactor", 2)
        svc.deploy(v1, "pump-1")
        svc.deploy(v1, "pump-2")
        assert v1.status == "deployed"
        with pytest.raises(Conflict, match="already deployed to 'pump-1'"):
            svc.deploy(v1, "pump-1")
        # Version 2 takes pump-1 over; version 1 keeps pump-2.
        svc.deploy(v2, "pump-1")
        assert (v1.status, v2.status) == ("deployed", "deployed")
        active = {(d.device, d.version) for d in svc.list_deployments()}
        assert active == {("pump-1", 2), ("pump-2", 1)}
        svc.retire(v1, "pump-2")
        assert v1.status == "retired"
        assert v1.retired_by == "user:tenant-a-engineer"
        with pytest.raises(NotFound, match="not deployed to 'pump-9'"):
            svc.retire(v2, "pump-9")
        svc.retire(v2)
        assert v2.status == "retired"
        with pytest.raises(Conflict, match="already retired"):
            svc.retire(v2)
        svc.deploy(v1, "pump-1")  # a rollback
        assert v1.status == "deployed"
        assert v1.retired_at is None
        history = svc.list_deployments(active=None)
        assert len(history) == 4
        assert sum(d.active for d in history) == 1
    with runtime.db.session() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.tenant_id == tenant_a.id).order_by(AuditEntry.seq)
        ).all()
    assert [a for a in actions if a.startswith("analytics.")] == [
        "analytics.model.train",
        "analytics.model.train",
        "analytics.model.deploy",
        "analytics.model.deploy",
        "analytics.model.deploy",
        "analytics.model.retire",
        "analytics.model.retire",
        "analytics.model.deploy",
    ]


async def test_the_scorers_follow_deployments_made_elsewhere(runtime: Runtime, tenant_a: TenantFixture) -> None:
    train_file(runtime, tenant_a, normal_data(200))
    runner = ScoringRunner(runtime)
    await runner.reload(force=False)
    assert runner.scorers == {}
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        deployment = svc.deploy(svc.get_version("reactor"), "pump-1")
    await runner.tick(reload=True)  # what the running platform does every few seconds
    assert list(runner.scorers) == [deployment.id]
    kept = runner.scorers[deployment.id]
    await runner.tick(reload=True)
    assert runner.scorers[deployment.id] is kept  # unchanged deployments keep their scorer and its state
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        svc.retire(svc.get_version("reactor"))
    await runner.tick(reload=True)
    assert runner.scorers == {}


# --- remaining useful life


def test_a_rul_model_learns_from_run_to_failure_histories(runtime: Runtime, tenant_a: TenantFixture) -> None:
    training, _ = rul_fleet_csv(12)
    with runtime.db.session() as session:
        svc = service(runtime, session, tenant_a)
        with pytest.raises(Invalid, match="needs the unit column"):
            svc.train_from_file("engine", "rul", training, "fleet.csv", variables=list(RUL_VARIABLES))
        with pytest.raises(Invalid, match="trains on a file of labelled rows"):
            svc.train_from_telemetry(
                "engine", "classifier", devices=["e-1"], metrics=["temperature"], start=START, end=START, interval_s=1
            )
        with pytest.raises(TrainingDataError, match="unknown parameters for rul: components"):
            svc.train_from_file(
                "engine", "rul", training, "fleet.csv", unit_column="unit", parameters={"components": 2}
            )
        version = svc.train_from_file(
            "engine",
            "rul",
            training,
            "fleet.csv",
            variables=list(RUL_VARIABLES),
            unit_column="unit",
            parameters={**RUL_QUICK, "cap": 125},
        )
        assert (version.kind, version.limits, version.parameters) == ("rul", {}, {**RUL_QUICK, "cap": 125})
        assert version.metrics["units"] == 12
        assert version.metrics["held_out_rmse"] > 0
        assert version.summary["cap"] == 125.0
        assert version.data_source["units"] == 12
        # In service: each unit's history stops before its failure; the estimate is near the truth.
        in_service, truth = rul_fleet_csv(6, seed=5, cut=True)
        report = svc.rul_file(version, in_service, "fleet.csv", unit_column="unit", truth_column="truth")
        assert [unit for unit, _ in report.units] == list(truth)
        assert all(e.valid and e.lower <= e.point <= e.upper for _, e in report.units)
        assert report.rmse is not None
        assert report.rmse < 40
        # A unit lacking a variable gets no estimate and names it.
        rows = in_service.decode().splitlines()
        rows[1] = ",".join(["u0", "", *rows[1].split(",")[2:]])
        report = svc.rul_file(version, "\n".join(rows).encode(), "fleet.csv", unit_column="unit")
        assert report.units[0][1].missing == ("temperature",)
        assert report.units[1][1].valid
        # Deployed, it needs its cycle (trained on a file, it has none); it has no T² to score.
        with pytest.raises(Invalid, match="give the sample interval"):
            svc.deploy(version, "engine-1", rul_threshold=20)
        with pytest.raises(Invalid, match="not a process monitor"):
            svc.score(version, [{"temperature": 1.0}])


# --- tenants and permissions


def test_other_tenants_models_are_not_found_and_viewers_cannot_train(
    runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    version_id = train_file(runtime, tenant_a, normal_data(200))
    with runtime.db.session() as session:
        model_id = session.scalars(select(Model.id)).one()
        other = service(runtime, session, tenant_b)
        assert other.list_models() == []
        for ref in ("reactor", model_id):
            with pytest.raises(NotFound):
                other.get_model(ref)
            with pytest.raises(NotFound):
                other.get_version(ref, 1)
        assert service(runtime, session, tenant_a).get_version(model_id, 1).id == version_id
        with pytest.raises(Forbidden):
            AnalyticsService(session, viewer(tenant_a)).train_from_file("m", "pca", csv_bytes(normal_data(50)), "x.csv")
        assert session.scalar(select(func.count(Deployment.id))) == 0
