"""The analytics API on SQLite and PostgreSQL: train, list, evaluate, score, explain, deploy, retire; problems."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from iip.telemetry.public import PointBatchBuilder, store_points
from tests.analytics.support import RUL_QUICK, RUL_VARIABLES, VARIABLES, csv_bytes, faulty, normal_data, rul_fleet_csv
from tests.api.support import assert_problem
from tests.conftest import TenantFixture

API = "/api/analytics"
START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
START_MS = int(START.timestamp() * 1000)


def train_file(
    client: TestClient,
    tenant: TenantFixture,
    content: bytes,
    *,
    name: str = "reactor",
    kind: str = "pca",
    role: Role = Role.ENGINEER,
    filename: str = "normal.csv",
    **fields: str,
) -> Any:
    return client.post(
        f"{API}/models/file",
        files={"file": (filename, content, "text/csv")},
        data={"name": name, "kind": kind, **fields},
        headers=tenant.headers(role),
    )


def trained(client: TestClient, tenant: TenantFixture, data: np.ndarray[Any, Any] | None = None, **kw: Any) -> Any:
    response = train_file(client, tenant, csv_bytes(normal_data(300) if data is None else data), **kw)
    assert response.status_code == 201, response.text
    return response.json()


def store_series(runtime: Runtime, tenant: TenantFixture, device: str, data: np.ndarray[Any, Any]) -> None:
    builder = PointBatchBuilder(tenant.id, "test")
    for i, row in enumerate(data.tolist()):
        for name, value in zip(VARIABLES, row, strict=True):
            builder.add(device, name, START_MS + i * 10_000, value)
    store_points(runtime, builder.build())


def test_train_list_and_read_a_model_from_a_file(client: TestClient, tenant_a: TenantFixture) -> None:
    version = trained(client, tenant_a, parameters=json.dumps({"components": 2}), description="R-101 jacket")
    assert (version["name"], version["version"], version["kind"], version["status"]) == ("reactor", 1, "pca", "trained")
    assert version["description"] == "R-101 jacket"
    assert version["variables"] == list(VARIABLES)
    assert version["summary"]["components"] == 2
    assert set(version["limits"]) == {"t2", "spe"}
    assert version["metrics"]["held_out_rows"] == 60
    assert version["data_source"]["rows"] == 300
    assert version["state_bytes"] > 0
    second = trained(client, tenant_a, normal_data(300, seed=3))
    assert second["version"] == 2
    listed = client.get(f"{API}/models", headers=tenant_a.headers(Role.VIEWER)).json()
    assert [(m["name"], m["latest_version"]) for m in listed] == [("reactor", 2)]
    detail = client.get(f"{API}/models/reactor", headers=tenant_a.headers(Role.VIEWER)).json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    by_id = client.get(f"{API}/models/{detail['id']}/versions/1", headers=tenant_a.headers(Role.VIEWER))
    assert by_id.json()["id"] == version["id"]
    latest = client.get(f"{API}/models/reactor/versions/latest", headers=tenant_a.headers(Role.VIEWER))
    assert latest.json()["version"] == 2
    by_version_id = client.get(f"{API}/models/reactor/versions/{version['id']}", headers=tenant_a.headers())
    assert by_version_id.json()["version"] == 1
    other_models = client.get(f"{API}/models/{detail['id']}/versions/{uuid.uuid4().hex}", headers=tenant_a.headers())
    assert_problem(other_models, 404, "version_not_found")


def test_train_on_stored_telemetry(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    store_series(runtime, tenant_a, "r-101", normal_data(120))
    body = {
        "name": "r101",
        "kind": "dpca",
        "source": {
            "devices": ["r-101"],
            "metrics": list(VARIABLES),
            "start": START.isoformat(),
            "end": (START + dt.timedelta(minutes=20)).isoformat(),
            "interval_s": 10,
        },
        "parameters": {"lags": 1},
        "false_alarm_rate": 0.05,
    }
    response = client.post(f"{API}/models", json=body, headers=tenant_a.headers(Role.ENGINEER))
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["data_source"]["interval_ms"] == 10_000
    assert version["parameters"] == {"lags": 1, "false_alarm_rate": 0.05, "holdout": 0.2}
    # A range past the stored data has gaps: refused, naming the variable and the time.
    body["source"]["end"] = (START + dt.timedelta(minutes=30)).isoformat()
    gap = assert_problem(
        client.post(f"{API}/models", json=body, headers=tenant_a.headers(Role.ENGINEER)), 422, "training_data_invalid"
    )
    assert gap["detail"].startswith("gap in 'temp': no good point between 2026-01-05T08:20:00.000Z")
    assert gap["variable"] == "temp"
    assert client.get(f"{API}/models/r101", headers=tenant_a.headers()).json()["latest_version"] == 1


@pytest.mark.parametrize(
    ("content", "fields", "code", "detail"),
    [
        (b"temp,flow\n1,2\n,4\n", {}, "training_data_invalid", "missing value at row 2 (line 3), column 'temp'"),
        (b"temp,flow\n1,2\n3,abc\n", {}, "training_data_invalid", "non-numeric value 'abc' at row 2 (line 3)"),
        (b"temp,flow\n1,2\n3\n", {}, "training_data_invalid", "mismatched columns: row 2 (line 3) has 1 cells"),
        (
            csv_bytes(normal_data(6)),
            {},
            "training_data_invalid",
            "too few rows in training data: 5 (at least 10 needed) (after holding out",
        ),
        (csv_bytes(normal_data(50)), {"variables": "temp,torque"}, "training_data_invalid", "'torque' not in"),
        (csv_bytes(normal_data(50)), {"kind": "pls"}, "kind_unknown", "unknown model kind 'pls'"),
        (csv_bytes(normal_data(50)), {"parameters": "{nope"}, "parameters_invalid", "parameters must be a JSON"),
        (csv_bytes(normal_data(50)), {"parameters": '{"folds": 1}'}, "training_data_invalid", "'folds' must be"),
    ],
)
def test_bad_training_data_is_a_problem_and_writes_nothing(
    client: TestClient, tenant_a: TenantFixture, content: bytes, fields: dict[str, str], code: str, detail: str
) -> None:
    response = train_file(client, tenant_a, content, **fields)
    body = assert_problem(response, 422, code)
    assert detail in body["detail"]
    assert client.get(f"{API}/models", headers=tenant_a.headers()).json() == []


def test_constant_columns_are_named(client: TestClient, tenant_a: TenantFixture) -> None:
    data = normal_data(100)
    data[:, 1] = 5.0
    body = assert_problem(train_file(client, tenant_a, csv_bytes(data)), 422, "training_data_invalid")
    assert body["detail"] == "constant columns in training data (no variation to model), variables: pressure"
    assert body["variables"] == ["pressure"]


def test_evaluate_a_labelled_file_and_a_telemetry_range(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    normal = normal_data(400)
    trained(client, tenant_a, normal[:300])
    rows = np.vstack([normal[300:350], faulty(normal[350:400], shift=4.0)])
    labels = ["normal"] * 50 + ["fault"] * 50
    times = [(START + dt.timedelta(minutes=i)).isoformat() for i in range(100)]
    response = client.post(
        f"{API}/evaluations",
        files={"file": ("test.csv", csv_bytes(rows, times=times, labels=labels), "text/csv")},
        data={"model": "reactor", "version": "1", "label_column": "label"},
        headers=tenant_a.headers(Role.VIEWER),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["rows"] == 100
    assert result["times"][1] == "2026-01-05T08:01:00Z"
    labelled = result["labelled"]
    assert (labelled["normal_rows"], labelled["fault_rows"]) == (50, 50)
    assert labelled["false_alarm_rate"] <= 0.1
    assert labelled["detection_rate"] >= 0.9
    assert result["alarm"][60] is True
    assert len(result["statistics"]["t2"]) == 100
    # A file without a variable's column: nothing is scored, and the variable is named.
    partial = client.post(
        f"{API}/evaluations",
        files={"file": ("partial.csv", csv_bytes(rows[:, :4], VARIABLES[:4]), "text/csv")},
        data={"model": "reactor"},
        headers=tenant_a.headers(Role.VIEWER),
    ).json()
    assert partial["missing"] == ["speed"]
    assert partial["valid"] == [False] * 100
    assert partial["statistics"]["spe"][0] is None
    # Stored telemetry of a device, on the grid the caller names (the model was trained on a file).
    store_series(runtime, tenant_a, "r-101", rows[:30])
    body = {"device": "r-101", "start": START.isoformat(), "end": (START + dt.timedelta(minutes=5)).isoformat()}
    problem = client.post(f"{API}/models/reactor/versions/1/evaluate", json=body, headers=tenant_a.headers())
    assert_problem(problem, 422, "interval_required")
    answer = client.post(
        f"{API}/models/reactor/versions/1/evaluate", json={**body, "interval_s": 10}, headers=tenant_a.headers()
    ).json()
    assert answer["rows"] == 30
    assert answer["valid"] == [True] * 30
    assert answer["times"][0] == "2026-01-05T08:00:00Z"
    assert answer["statistics"]["t2"][:5] == pytest.approx(result["statistics"]["t2"][:5])


def test_score_a_block_and_explain_a_sample(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    normal = normal_data(300)
    trained(client, tenant_a, normal)
    center = dict(zip(VARIABLES, normal.mean(axis=0).tolist(), strict=True))
    fault = {**center, "flow": center["flow"] + 4.0}
    samples = [center, {k: v for k, v in center.items() if k != "temp"}, {**center, "level": None}, fault]
    response = client.post(
        f"{API}/models/reactor/versions/latest/score", json={"samples": samples}, headers=tenant_a.headers(Role.VIEWER)
    )
    assert response.status_code == 200, response.text
    scored = response.json()
    assert scored["valid"] == [True, False, False, True]
    assert scored["missing"] == [[], ["temp"], ["level"], []]
    assert scored["statistics"]["t2"][1] is None
    assert scored["alarm"] == [False, False, False, True]
    unknown = client.post(
        f"{API}/models/reactor/versions/1/score", json={"samples": [{"torque": 1.0}]}, headers=tenant_a.headers()
    )
    assert "unknown variables: torque" in assert_problem(unknown, 422, "scoring_data_invalid")["detail"]
    explained = client.post(
        f"{API}/models/reactor/versions/1/contributions",
        json={"samples": [center, fault], "row": 1},
        headers=tenant_a.headers(Role.VIEWER),
    ).json()
    assert explained["row"] == 1
    assert explained["top"]["spe"][0] == "flow"
    assert explained["statistics"]["spe"] > explained["limits"]["spe"]
    # At a moment of stored telemetry.
    store_series(runtime, tenant_a, "r-101", np.array([list(center.values()), list(fault.values())]))
    at = client.post(
        f"{API}/models/reactor/versions/1/contributions",
        json={"device": "r-101", "at": (START + dt.timedelta(seconds=10)).isoformat(), "interval_s": 10},
        headers=tenant_a.headers(Role.VIEWER),
    ).json()
    assert at["at"] == "2026-01-05T08:00:10Z"
    for statistic, shares in explained["contributions"].items():
        assert at["contributions"][statistic] == pytest.approx(shares)
    lacking = client.post(
        f"{API}/models/reactor/versions/1/contributions",
        json={"samples": [{**center, "flow": None}]},
        headers=tenant_a.headers(),
    )
    assert "missing: flow" in assert_problem(lacking, 422, "scoring_data_invalid")["detail"]
    assert_problem(
        client.post(f"{API}/models/reactor/versions/1/contributions", json={}, headers=tenant_a.headers()), 422
    )


def test_deploy_and_retire(client: TestClient, tenant_a: TenantFixture) -> None:
    trained(client, tenant_a)
    path = f"{API}/models/reactor/versions/1"
    assert_problem(
        client.post(f"{path}/deployments", json={"device": "p-1"}, headers=tenant_a.headers(Role.VIEWER)), 403
    )
    deployed = client.post(f"{path}/deployments", json={"device": "p-1"}, headers=tenant_a.headers(Role.ENGINEER))
    assert deployed.status_code == 201, deployed.text
    assert (deployed.json()["device"], deployed.json()["active"]) == ("p-1", True)
    assert_problem(
        client.post(f"{path}/deployments", json={"device": "p-1"}, headers=tenant_a.headers()), 409, "already_deployed"
    )
    version = client.get(path, headers=tenant_a.headers()).json()
    assert version["status"] == "deployed"
    assert [d["device"] for d in version["deployments"]] == ["p-1"]
    listed = client.get(f"{API}/deployments", headers=tenant_a.headers(Role.VIEWER)).json()
    assert [(d["model"], d["version"], d["device"]) for d in listed] == [("reactor", 1, "p-1")]
    retired = client.post(f"{path}/retire", json={"device": "p-1"}, headers=tenant_a.headers(Role.ENGINEER))
    assert retired.status_code == 200, retired.text
    assert (retired.json()["status"], retired.json()["deployments"]) == ("retired", [])
    assert client.get(f"{API}/deployments", headers=tenant_a.headers()).json() == []
    assert len(client.get(f"{API}/deployments", params={"active": "false"}, headers=tenant_a.headers()).json()) == 1
    assert_problem(client.post(f"{path}/retire", headers=tenant_a.headers()), 409, "already_retired")


def test_another_tenants_model_is_not_found(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    version = trained(client, tenant_a)
    for path in (
        f"{API}/models/reactor",
        f"{API}/models/{version['model_id']}",
        f"{API}/models/{version['model_id']}/versions/1",
    ):
        assert_problem(client.get(path, headers=tenant_b.headers()), 404, "model_not_found")
    refused = client.post(
        f"{API}/evaluations",
        files={"file": ("x.csv", csv_bytes(normal_data(10)), "text/csv")},
        data={"model": version["model_id"]},
        headers=tenant_b.headers(),
    )
    assert_problem(refused, 404, "model_not_found")
    assert client.get(f"{API}/models", headers=tenant_b.headers()).json() == []
    assert client.get(f"{API}/models/reactor/versions/7", headers=tenant_a.headers()).status_code == 404
    assert_problem(client.get(f"{API}/models/reactor/versions/x", headers=tenant_a.headers()), 404, "version_not_found")
    # A platform operator names the tenant a new model goes to.
    own = train_file(client, tenant_a, csv_bytes(normal_data(60)), role=Role.PLATFORM_OPERATOR, name="shared")
    assert own.json()["tenant_id"] == tenant_a.id
    placed = client.post(
        f"{API}/models/file",
        params={"tenant_id": tenant_b.id},
        files={"file": ("n.csv", csv_bytes(normal_data(60)), "text/csv")},
        data={"name": "for-b", "kind": "pca"},
        headers=tenant_a.headers(Role.PLATFORM_OPERATOR),
    )
    assert placed.status_code == 201, placed.text
    assert placed.json()["tenant_id"] == tenant_b.id
    assert [m["name"] for m in client.get(f"{API}/models", headers=tenant_b.headers()).json()] == ["for-b"]


def test_remaining_useful_life_per_unit(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    training, _ = rul_fleet_csv(12)
    fields = {"unit_column": "unit", "variables": ",".join(RUL_VARIABLES), "parameters": json.dumps(RUL_QUICK)}
    version = train_file(client, tenant_a, training, name="engine", kind="rul", **fields)
    assert version.status_code == 201, version.text
    assert version.json()["metrics"]["units"] == 12
    in_service, truth = rul_fleet_csv(4, seed=5, cut=True)
    response = client.post(
        f"{API}/rul/file",
        files={"file": ("fleet.csv", in_service, "text/csv")},
        data={"model": "engine", "unit_column": "unit", "truth_column": "truth"},
        headers=tenant_a.headers(Role.VIEWER),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["name"], answer["version"], answer["cap"]) == ("engine", 1, 125.0)
    assert [u["unit"] for u in answer["units"]] == list(truth)
    assert all(u["lower"] <= u["point"] <= u["upper"] for u in answer["units"])
    assert answer["rmse"] is not None
    # Devices as units: each one's stored telemetry, one cycle per step; a device lacking a metric gets none.
    rows = [line.split(",") for line in in_service.decode().splitlines()[1:]]
    builder = PointBatchBuilder(tenant_a.id, "test")
    for device, unit in (("engine-1", "u0"), ("engine-2", "u0")):
        cycles = [r for r in rows if r[0] == unit]
        for i, row in enumerate(cycles):
            for name, value in zip(RUL_VARIABLES, row[1:4], strict=True):
                if not (device == "engine-2" and name == "vibration"):
                    builder.add(device, name, START_MS + i * 60_000, float(value))
    store_points(runtime, builder.build())
    span = len([r for r in rows if r[0] == "u0"])
    body = {
        "model": "engine",
        "devices": ["engine-1", "engine-2"],
        "start": START.isoformat(),
        "end": (START + dt.timedelta(minutes=span)).isoformat(),
        "interval_s": 60,
    }
    live = client.post(f"{API}/rul", json=body, headers=tenant_a.headers(Role.VIEWER))
    assert live.status_code == 200, live.text
    one, two = live.json()["units"]
    assert one["unit"] == "engine-1"
    assert one["point"] == pytest.approx(answer["units"][0]["point"])
    assert (two["point"], two["missing"]) == (None, ["vibration"])
    # Deployed, a RUL model trained on a file needs its cycle; a monitor has no RUL.
    deployments = f"{API}/models/engine/versions/1/deployments"
    assert_problem(client.post(deployments, json={"device": "e"}, headers=tenant_a.headers()), 422, "interval_required")
    deployed = client.post(
        deployments, json={"device": "e", "interval_s": 60, "rul_threshold": 20}, headers=tenant_a.headers()
    )
    assert deployed.status_code == 201, deployed.text
    assert deployed.json()["settings"]["interval_ms"] == 60_000
    assert deployed.json()["settings"]["rul_threshold"] == 20.0
    trained(client, tenant_a)
    assert_problem(
        client.post(f"{API}/rul", json={**body, "model": "reactor"}, headers=tenant_a.headers()), 422, "not_a_rul_model"
    )
