"""The analytics console pages on SQLite: the model list and a model's versions, deploying and
retiring (and what a role without `analytics.write` may do), the monitoring chart and the
contributions at a moment, SPC charts of telemetry and of an uploaded column, RUL per unit; in
English and Chinese."""

from __future__ import annotations

import datetime as dt
import json
import re
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import sync_playwright

from iip.analytics import spc
from iip.analytics.service import AnalyticsService
from iip.api.app import create_app
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from iip.telemetry.public import PointBatchBuilder, Quality, store_points
from tests.analytics.support import (
    RUL_CAP,
    RUL_QUICK,
    RUL_VARIABLES,
    VARIABLES,
    csv_bytes,
    degrading_unit,
    engineer,
    faulty,
    normal_data,
    rul_fleet_csv,
)
from tests.conftest import TenantFixture, make_tenant
from tests.console.support import (
    assert_html,
    audit_entries,
    heading_text,
    section,
    sign_in_as,
    tenant_with_users,
    text_of,
)
from tests.console.test_browser import CHROMIUM_ARGS, chromium, runtime_version, serve

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
__all__ = ["chromium"]  # a fixture, used by name

START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
START_MS = int(START.timestamp() * 1000)
FIELD = "%Y-%m-%dT%H:%M:%S"  # as a datetime-local field sends it


def people(client: TestClient, runtime: Runtime, language: str = "en") -> tuple[TenantFixture, str]:
    """A new tenant with an engineer and a viewer; the engineer signed in. Its CSRF token."""
    tenant = tenant_with_users(runtime, [Role.ENGINEER, Role.VIEWER])
    return tenant, sign_in_as(client, tenant, Role.ENGINEER, language)


def train(client: TestClient, tenant: TenantFixture, content: bytes, **fields: str) -> dict[str, Any]:
    response = client.post(
        "/api/analytics/models/file",
        files={"file": ("train.csv", content, "text/csv")},
        data={"name": "reactor", "kind": "pca", **fields},
        headers=tenant.headers(Role.ENGINEER),
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def store(
    runtime: Runtime, tenant: TenantFixture, device: str, names: tuple[str, ...], rows: Any, step_ms: int
) -> None:
    builder = PointBatchBuilder(tenant.id, "test")
    for i, row in enumerate(np.asarray(rows, dtype=float).tolist()):
        for name, value in zip(names, row, strict=True):
            builder.add(device, name, START_MS + i * step_ms, value)
    store_points(runtime, builder.build())


def rows_of(html: str, table_id: str, attribute: str) -> list[str]:
    """The `attribute` of each row of a table, in order."""
    return re.findall(rf'<tr {attribute}="([^"]+)"', section(html, table_id))


def chart_data(html: str, element_id: str, attribute: str = "data-chart") -> Any:
    match = re.search(rf'id="{element_id}"[^>]*?{attribute}="([^"]*)"', html, re.DOTALL)
    assert match, f"no {attribute} on #{element_id}"
    return json.loads(unescape(match.group(1)))


# --- model list, a model's versions, deploying ------------------------------------------------


def test_model_list_and_versions_with_their_figures(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = people(client, runtime)
    first = train(client, tenant, csv_bytes(normal_data(300)), description="R-101 jacket")
    second = train(client, tenant, csv_bytes(normal_data(300, seed=3)), parameters=json.dumps({"components": 2}))
    page = assert_html(client.get("/analytics/models"), 200)
    assert heading_text(page) == "Models"
    assert rows_of(page, "models-table", "data-model") == ["reactor"]
    row = text_of(section(page, "models-table"))
    measured = second["metrics"]["false_alarm_rate"]
    assert f"False-alarm rate (measured) {measured * 100:.2f} %" in row
    assert f"Explained variance {second['metrics']['explained_variance'] * 100:.2f} %" in row
    assert "R-101 jacket" in row
    assert 'data-status="trained"' in section(page, "models-table")
    # A filter that matches nothing.
    empty = assert_html(client.get("/analytics/models", params={"q": "boiler"}), 200)
    assert rows_of(empty, "models-table", "data-model") == []
    assert "No model matches." in empty

    model = assert_html(client.get("/analytics/models/reactor"), 200)
    assert re.findall(r'data-version="(\d+)"', model) == ["2", "1"]  # newest first
    one = text_of(model[model.index('id="version-1"') :])
    assert f"Rows {first['data_source']['rows']}" in one
    assert "File train.csv" in one
    assert f"held_out_rows {first['metrics']['held_out_rows']}" in one
    two = text_of(model[model.index('id="version-2"') : model.index('id="version-1"')])
    assert "components 2" in two  # its parameters
    assert "/analytics/models/reactor/versions/2/monitor" in model
    # Another tenant's model is not found, by name or by id.
    other, _ = people(client, runtime)
    assert_html(client.get("/analytics/models/reactor"), 404)
    assert_html(client.get(f"/analytics/models/{first['model_id']}"), 404)
    assert other.id != tenant.id


def test_deploy_and_retire_and_what_a_viewer_may_do(client: TestClient, runtime: Runtime) -> None:
    tenant, token = people(client, runtime)
    train(client, tenant, csv_bytes(normal_data(300)))
    page = assert_html(client.get("/analytics/models/reactor"), 200)
    assert 'data-action="deploy"' in page
    deploy = "/analytics/models/reactor/versions/1/deploy"
    # Bad input: the page again, with the reason, and nothing deployed.
    refused = assert_html(client.post(deploy, data={"csrf_token": token, "device": "line/1"}), 422)
    assert "A device key has at most 200 characters and no slash." in refused
    blank = assert_html(client.post(deploy, data={"csrf_token": token, "device": "  "}), 422)
    assert "Enter the device's key." in unescape(blank)
    assert_html(client.post(deploy, data={"device": "p-1"}), 403)  # no CSRF token
    assert client.get("/api/analytics/deployments", headers=tenant.headers()).json() == []

    done = client.post(deploy, data={"csrf_token": token, "device": "p-1"}, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/analytics/models/reactor#version-1"
    page = assert_html(client.get("/analytics/models/reactor"), 200)
    assert "The version was deployed." in page
    assert 'data-status="deployed"' in page
    assert rows_of(page, "version-1", "data-device") == ["p-1"]
    assert len(audit_entries(runtime, "analytics.model.deploy")) == 1
    again = assert_html(client.post(deploy, data={"csrf_token": token, "device": "p-1"}), 409)
    assert "Not done: version 1 of 'reactor' is already deployed to 'p-1'" in unescape(again)
    listed = assert_html(client.get("/analytics/models"), 200)
    assert 'data-status="deployed"' in section(listed, "models-table")

    # A viewer sees the deployment but no buttons, and is refused the POSTs.
    viewer_token = sign_in_as(client, tenant, Role.VIEWER, "en")
    seen = assert_html(client.get("/analytics/models/reactor"), 200)
    assert rows_of(seen, "version-1", "data-device") == ["p-1"]
    assert 'data-action="deploy"' not in seen
    assert 'data-action="retire"' not in seen
    assert 'data-action="end-deployment"' not in seen
    assert_html(client.post(deploy, data={"csrf_token": viewer_token, "device": "p-2"}), 403)
    retire = "/analytics/models/reactor/versions/1/retire"
    assert_html(client.post(retire, data={"csrf_token": viewer_token}), 403)
    deployed = client.get("/api/analytics/deployments", headers=tenant.headers()).json()
    assert [d["device"] for d in deployed] == ["p-1"]

    token = sign_in_as(client, tenant, Role.ENGINEER, "en")
    missing = assert_html(client.post(retire, data={"csrf_token": token, "device": "p-9"}), 404)
    assert "is not deployed to 'p-9'" in unescape(missing)
    ended = client.post(retire, data={"csrf_token": token, "device": "p-1"}, follow_redirects=False)
    assert ended.status_code == 303, ended.text
    page = assert_html(client.get("/analytics/models/reactor"), 200)
    assert "The deployment was ended." in page
    assert 'data-status="retired"' in page
    assert client.get("/api/analytics/deployments", headers=tenant.headers()).json() == []


def card(html: str, number: int) -> str:
    """One version's card on a model's page, its forms included."""
    start = html.index(f'id="version-{number}"')
    return html[start : html.index("</section>", start)]


def deployments_of(client: TestClient, tenant: TenantFixture) -> dict[str, dict[str, Any]]:
    listed = client.get("/api/analytics/deployments", headers=tenant.headers()).json()
    return {f"{d['model']}@{d['version']}/{d['device']}": d["settings"] for d in listed}


def test_deploying_a_rul_model_takes_its_threshold_interval_and_start(client: TestClient, runtime: Runtime) -> None:
    tenant, token = people(client, runtime)
    fleet, _ = rul_fleet_csv(12)
    train(client, tenant, fleet, name="engine", kind="rul", unit_column="unit", variables=",".join(RUL_VARIABLES),
          parameters=json.dumps(RUL_QUICK))  # fmt: skip
    page = assert_html(client.get("/analytics/models/engine"), 200)
    form = card(page, 1)
    for name in ("device", "threshold", "interval", "since", "staleness"):
        assert f'name="{name}"' in form
    assert 'name="classifier"' not in form
    deploy = "/analytics/models/engine/versions/1/deploy"
    good = {"csrf_token": token, "device": "engine-a", "threshold": "30", "interval": "60", "since": "2026-01-05T08:00"}
    # The API's bounds, as form errors; nothing deployed.
    refused = assert_html(client.post(deploy, data={**good, "threshold": "-1", "interval": "0"}), 422)
    assert "Enter a number from 0 to 1e+06." in refused
    assert "Enter a number above 0 and at most 86400." in refused
    assert 'value="-1"' in refused  # the form shown again as sent
    late = assert_html(client.post(deploy, data={**good, "since": "yesterday"}), 422)
    assert "Enter a date and time, e.g. 2026-01-05 08:00." in late
    # A file-trained version has no interval of its own: the service's reason is shown in the form.
    no_interval = assert_html(client.post(deploy, data={**good, "interval": ""}), 422)
    assert "Not done: give the sample interval: version 1 was not trained on telemetry" in unescape(no_interval)
    assert deployments_of(client, tenant) == {}

    done = client.post(deploy, data=good, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/analytics/models/engine#version-1"
    settings = deployments_of(client, tenant)["engine@1/engine-a"]
    assert settings == {"rul_threshold": 30.0, "interval_ms": 60_000, "since_ms": START_MS}
    page = assert_html(client.get("/analytics/models/engine"), 200)
    assert rows_of(page, "version-1", "data-device") == ["engine-a"]
    shown = text_of(card(page, 1))
    assert "rul_threshold 30" in shown
    assert "since_ms 2026-01-05 08:00:00 UTC" in shown
    again = assert_html(client.post(deploy, data=good), 409)
    assert "Not done: version 1 of 'engine' is already deployed to 'engine-a'" in unescape(again)


def test_deploying_a_monitor_with_a_fault_classifier_and_a_classifier_beside_a_monitor(
    client: TestClient, runtime: Runtime
) -> None:
    tenant, token = people(client, runtime, "zh-CN")
    train(client, tenant, csv_bytes(normal_data(300)))
    data = normal_data(400, seed=5)
    labelled = csv_bytes(
        np.vstack([data[:200], faulty(data[200:], "flow", 3.0)]), labels=["normal"] * 200 + ["flow"] * 200
    )
    train(client, tenant, labelled, name="faults", kind="classifier", label_column="label")
    page = assert_html(client.get("/analytics/models/reactor"), 200)
    assert 'name="classifier"' in card(page, 1)
    assert 'name="threshold"' not in card(page, 1)
    deploy = "/analytics/models/reactor/versions/1/deploy"
    unknown = assert_html(client.post(deploy, data={"csrf_token": token, "device": "p-1", "classifier": "nope"}), 404)
    assert "未执行" in unknown
    assert "nope" in unescape(unknown)
    long_name = assert_html(
        client.post(deploy, data={"csrf_token": token, "device": "p-1", "classifier": "x" * 130}), 422
    )
    assert "请按 名称 或 名称@版本 输入模型版本。" in long_name
    stale = assert_html(client.post(deploy, data={"csrf_token": token, "device": "p-1", "staleness": "90000"}), 422)
    assert "86400" in stale
    done = client.post(deploy, data={"csrf_token": token, "device": "p-1", "classifier": "faults@1", "staleness": "5"},
                       follow_redirects=False)  # fmt: skip
    assert done.status_code == 303, done.text
    settings = deployments_of(client, tenant)["reactor@1/p-1"]
    assert settings["classifier"] == "faults@1"
    assert settings["staleness_s"] == 5.0

    # A classifier's page deploys the monitor named beside it.
    page = assert_html(client.get("/analytics/models/faults"), 200)
    form = card(page, 1)
    assert 'name="monitor"' in form
    assert 'data-kind="classifier"' in form
    assert "分类器随过程监控模型部署" in page
    beside = "/analytics/models/faults/versions/1/deploy"
    missing = assert_html(client.post(beside, data={"csrf_token": token, "device": "p-2"}), 422)
    assert "请按 名称 或 名称@版本 输入模型版本。" in missing
    itself = assert_html(client.post(beside, data={"csrf_token": token, "device": "p-2", "monitor": "faults"}), 422)
    assert "a classifier is not deployed on its own" in unescape(itself)
    done = client.post(
        beside, data={"csrf_token": token, "device": "p-2", "monitor": "reactor@1"}, follow_redirects=False
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/analytics/models/reactor#version-1"
    settings = deployments_of(client, tenant)["reactor@1/p-2"]
    assert settings["classifier"] == "faults@1"
    page = assert_html(client.get("/analytics/models/reactor"), 200)
    assert "监控模型已随此分类器部署。" in page
    assert sorted(re.findall(r'<tr data-device="([^"]+)"', card(page, 1))) == ["p-1", "p-2"]
    assert len(audit_entries(runtime, "analytics.model.deploy")) == 2


# --- monitoring chart and contributions -------------------------------------------------------


def test_monitoring_chart_shows_the_fault_and_contributions_name_the_shifted_variable(
    client: TestClient, runtime: Runtime
) -> None:
    tenant, _token = people(client, runtime)
    data = normal_data(400)
    train(client, tenant, csv_bytes(data[:300]))
    # 60 normal samples, then flow pushed off its relation to the others, every 10 s.
    store(runtime, tenant, "r-101", VARIABLES, np.vstack([data[300:360], faulty(data[360:400], shift=4.0)]), 10_000)
    end = START + dt.timedelta(seconds=1000)
    query = {"device": "r-101", "start": START.strftime(FIELD), "end": end.strftime(FIELD), "interval": "10"}
    page = assert_html(client.get("/analytics/models/reactor/versions/1/monitor", params=query), 200)
    assert heading_text(page) == "Monitoring chart"
    assert f"Version {runtime_version()}" in page  # the layout's own `version` is not the model's
    assert re.search(r'id="stat-rows">100<', page)
    alarms = int(re.search(r'id="stat-alarms">(\d+)<', page).group(1))  # type: ignore[union-attr]
    assert alarms >= 30
    chart = chart_data(page, "monitor-chart")
    assert [p["name"] for p in chart["panels"]] == ["t2", "spe"]
    assert len(chart["times"]) == 100
    assert chart["times"][0] == START_MS
    assert set(range(60, 100)) <= set(chart["alarms"])  # the whole fault
    assert len([i for i in chart["alarms"] if i < 60]) <= 6  # a few false alarms before it, at most
    assert all(p["limit"] > 0 for p in chart["panels"])
    # Each panel marks the samples in alarm where its own statistic is over its limit.
    panels = {p["name"]: p for p in chart["panels"]}
    assert set(range(60, 100)) <= set(panels["spe"]["alarms"])
    for panel in panels.values():
        assert set(panel["alarms"]) <= set(chart["alarms"])
        assert all(panel["values"][i] > panel["limit"] for i in panel["alarms"])
    # The fault is one episode, from 08:10:00 to the end of the range.
    episodes = section(page, "episodes-table")
    fault = episodes[episodes.index('<tr data-first="60"') :]
    assert text_of(fault).startswith("2026-01-05 08:10:00 UTC 2026-01-05 08:16:40 UTC 40")
    # Its peak's link opens the contributions at that moment: flow first.
    link = unescape(re.search(r'href="([^"]+)" data-explain-peak', fault).group(1))  # type: ignore[union-attr]
    explained = assert_html(client.get(link), 200)
    assert heading_text(explained) == "Contributions"
    spe = explained[explained.index('data-statistic="spe"') :]
    assert 'data-over="true"' in spe[:200]
    assert re.findall(r'<tr data-variable="([^"]+)"', spe)[0] == "flow"
    bars = chart_data(explained, "contribution-data")
    assert bars["panels"][1]["variables"][0] == "flow"
    assert bars["panels"][1]["values"] == sorted(bars["panels"][1]["values"], reverse=True)
    # The forms alone, before anything is chosen.
    for form_only in ("monitor", "contributions"):
        bare = assert_html(client.get(f"/analytics/models/reactor/versions/1/{form_only}"), 200)
        assert 'value="r-101"' not in bare  # trained on a file: no device to suggest
    # A moment typed into the form (a normal one): under the limits.
    typed = {**query, "at": (START + dt.timedelta(seconds=100)).strftime(FIELD), "top": "3"}
    calm = assert_html(client.get("/analytics/models/reactor/versions/1/contributions", params=typed), 200)
    assert 'data-over="true"' not in calm
    assert len(re.findall(r'<tr data-variable="', calm)) == 6  # top 3 of each statistic
    assert "2 more variables contribute less." in calm
    # Bad input names the field, and nothing is charted.
    backwards = {**query, "end": START.strftime(FIELD), "start": end.strftime(FIELD)}
    wrong = assert_html(client.get("/analytics/models/reactor/versions/1/monitor", params=backwards), 422)
    assert "The end must be after the start." in wrong
    assert 'id="monitor-chart"' not in wrong
    long = {**query, "interval": "0.01"}
    assert "at most 20000 on one chart" in assert_html(
        client.get("/analytics/models/reactor/versions/1/monitor", params=long), 422
    )
    lacking = {**query, "device": "r-102"}  # no telemetry: nothing scored, the variables named
    empty = assert_html(client.get("/analytics/models/reactor/versions/1/monitor", params=lacking), 200)
    assert re.search(r'id="stat-scored">0<', empty)
    assert "Missing: flow, level, pressure, speed, temp" in text_of(section(empty, "missing-variables"))


# --- statistical process control --------------------------------------------------------------


def outlier_series() -> np.ndarray[Any, np.dtype[np.float64]]:
    """120 thickness readings around 50 mm, with one far outlier at point 60."""
    values = 50.0 + 0.5 * np.random.default_rng(4).normal(size=120)
    values[60] = 54.0
    return values


def test_spc_on_telemetry_marks_the_outlier_with_rule_1(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = people(client, runtime)
    values = outlier_series()
    store(runtime, tenant, "line-1", ("thickness",), values[:, None], 60_000)
    # A point of bad quality is no measurement: left out.
    bad = PointBatchBuilder(tenant.id, "test")
    bad.add("line-1", "thickness", START_MS + 30 * 60_000 + 1, 99.0, Quality.BAD)
    store_points(runtime, bad.build())
    query = {
        "device": "line-1",
        "metric": "thickness",
        "start": START.strftime(FIELD),
        "end": (START + dt.timedelta(hours=3)).strftime(FIELD),
        "chart": "imr",
        "rules": "we",
    }
    page = assert_html(client.get("/analytics/spc", params=query), 200)
    assert re.search(r'id="stat-points">120<', page)
    signals = section(page, "signals-table")
    individual = re.findall(r'<tr data-panel="individual" data-index="(\d+)" data-rules="([^"]+)"', signals)
    assert [index for index, rules in individual if "we_1" in rules.split()] == ["60"]
    assert "Western Electric 1: one point beyond 3 sigma" in text_of(signals)
    assert "2026-01-05 09:00:00 UTC" in text_of(signals)  # point 60, a minute apart
    chart = chart_data(page, "spc-chart")
    assert [p["title"] for p in chart["panels"]] == ["Individual values", "Moving range"]
    assert 60 in [m["i"] for m in chart["panels"][0]["markers"]]
    assert chart["panels"][0]["center"] == pytest.approx(float(values.mean()))
    expected = spc.individuals_chart(values)
    assert chart["panels"][0]["upper"][0] == pytest.approx(float(expected.location.upper[0]))
    assert 'id="capability-table"' not in page  # no specification limits given
    # Nelson's rules name their own rule 1.
    nelson = assert_html(client.get("/analytics/spc", params={**query, "rules": "nelson"}), 200)
    assert "Nelson 1: one point beyond 3 sigma" in text_of(section(nelson, "signals-table"))
    # In Chinese.
    sign_in_as(client, tenant, Role.ENGINEER, "zh_CN")
    chinese = assert_html(client.get("/analytics/spc", params=query), 200)
    assert heading_text(chinese) == "SPC 控制图"
    assert "西方电气准则 1：1 个点落在 3σ 之外" in text_of(section(chinese, "signals-table"))
    assert chart_data(chinese, "spc-chart")["panels"][0]["title"] == "单值"
    # A metric without points, and a device key that cannot be one.
    none = assert_html(client.get("/analytics/spc", params={**query, "metric": "width"}), 422)
    assert "该设备的这个测点在该范围内没有存储的数据点。" in none
    assert_html(client.get("/analytics/spc", params={**query, "device": "a/b"}), 422)


def test_capability_indices_with_specification_limits(client: TestClient, runtime: Runtime) -> None:
    tenant, token = people(client, runtime)
    values = outlier_series()
    store(runtime, tenant, "line-1", ("thickness",), values[:, None], 60_000)
    query = {
        "device": "line-1",
        "metric": "thickness",
        "start": START.strftime(FIELD),
        "end": (START + dt.timedelta(hours=3)).strftime(FIELD),
        "chart": "imr",
        "rules": "we",
        "lsl": "47",
        "usl": "53",
    }
    page = assert_html(client.get("/analytics/spc", params=query), 200)
    expected = spc.capability(values, lsl=47, usl=53)
    table = section(page, "capability-table")
    for index in ("cp", "cpk", "pp", "ppk"):
        shown = re.search(rf'data-index="{index}">([^<]+)<', table).group(1)  # type: ignore[union-attr]
        assert shown == f"{getattr(expected, index):.3f}", index
    # One-sided: Cp and Pp have no meaning.
    upper_only = assert_html(client.get("/analytics/spc", params={**query, "lsl": ""}), 200)
    assert re.search(r'data-index="cp">—<', section(upper_only, "capability-table"))
    crossed = assert_html(client.get("/analytics/spc", params={**query, "lsl": "53", "usl": "47"}), 422)
    assert "The upper specification limit must be above the lower one." in crossed
    assert 'id="capability-table"' not in crossed

    # An uploaded column, charted as subgroups of 5; the 2 values left over are said, not charted.
    content = ("time,thickness\n" + "".join(
        f"{(START + dt.timedelta(minutes=i)).isoformat()},{v:.4f}\n" for i, v in enumerate(values[:117])
    )).encode()  # fmt: skip
    form = {"csrf_token": token, "source": "file", "column": "thickness", "chart": "xbar_r", "subgroup": "5"}
    form.update(rules="we", lam="0.2", width="3", k="0.5", h="5", lsl="47", usl="53")
    uploaded = client.post("/analytics/spc", data=form, files={"file": ("line.csv", content, "text/csv")})
    page = assert_html(uploaded, 200)
    assert "The last 2 values do not fill a subgroup and are not charted." in page
    groups = np.round(values[:115], 4).reshape(23, 5)
    expected = spc.capability(groups, lsl=47, usl=53)
    shown = re.search(r'data-index="cpk">([^<]+)<', section(page, "capability-table")).group(1)  # type: ignore[union-attr]
    assert shown == f"{expected.cpk:.3f}"
    chart = chart_data(page, "spc-chart")
    assert [p["title"] for p in chart["panels"]] == ["Subgroup mean", "Subgroup range"]
    assert chart["timed"] is True
    assert chart["panels"][0]["x"][1] == START_MS + 5 * 60_000
    # A column that is not in the file, and a file with a word among the numbers.
    form["column"] = "width"
    absent = assert_html(
        client.post("/analytics/spc", data=form, files={"file": ("line.csv", content, "text/csv")}), 422
    )
    assert "The file cannot be read:" in absent
    assert "width" in absent
    form["column"] = "thickness"
    broken = content.replace(b",50.", b",fifty.", 1)
    unreadable = client.post("/analytics/spc", data=form, files={"file": ("line.csv", broken, "text/csv")})
    assert "non-numeric value" in assert_html(unreadable, 422)
    assert_html(client.post("/analytics/spc", data={**form, "csrf_token": "wrong"}), 403)


# --- remaining useful life --------------------------------------------------------------------


def test_remaining_useful_life_lists_units_most_urgent_first(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = people(client, runtime)
    training, _ = rul_fleet_csv(12)
    fields = {"name": "engine", "kind": "rul", "unit_column": "unit", "variables": ",".join(RUL_VARIABLES)}
    version = train(client, tenant, training, parameters=json.dumps(RUL_QUICK), **fields)
    listed = assert_html(client.get("/analytics/models"), 200)
    rmse = version["metrics"]["held_out_rmse"]
    assert f"RMSE (held out, cycles) {rmse:.1f}" in text_of(section(listed, "models-table"))
    # Four engines in service, 150 cycles each (one a minute), with 10, 110 and 60 cycles left;
    # the fourth never reports vibration.
    rng = np.random.default_rng(21)
    for device, left in (("engine-a", 10), ("engine-c", 110), ("engine-b", 60), ("engine-d", 30)):
        history = degrading_unit(rng, 150 + left)[:150]
        names = RUL_VARIABLES if device != "engine-d" else RUL_VARIABLES[:2]
        store(runtime, tenant, device, names, history[:, : len(names)], 60_000)
    query = {
        "devices": "engine-c, engine-a engine-d,engine-b",
        "start": START.strftime(FIELD),
        "end": (START + dt.timedelta(minutes=150)).strftime(FIELD),
        "interval": "60",
    }
    page = assert_html(client.get("/analytics/models/engine/versions/1/rul", params=query), 200)
    assert heading_text(page) == "Remaining useful life"
    assert f"Version {runtime_version()}" in page
    assert rows_of(page, "units-table", "data-unit") == ["engine-a", "engine-b", "engine-c", "engine-d"]
    table = section(page, "units-table")
    assert 'data-unit="engine-d" data-valid="false"' in table
    assert "Missing: vibration" in text_of(table)
    points = [float(p) for p in re.findall(r'data-point="([^"]+)"', table)]
    assert points[0] < points[1] < points[2] <= RUL_CAP
    # The most urgent unit's curve: one estimate per cycle, inside its band, ending at the table's figure.
    curve = chart_data(page, "rul-chart")
    assert page.count('data-unit="engine-a"') == 2  # its row, and its chart
    assert curve["cycles"] == list(range(1, 151))
    assert curve["point"][-1] == pytest.approx(points[0], abs=0.05)
    assert all(0 <= lo <= hi <= RUL_CAP for lo, hi in zip(curve["lower"], curve["upper"], strict=True))
    assert curve["point"][-1] < curve["point"][0]  # wearing out
    assert curve["cap"] == RUL_CAP
    # Another unit's chart, by its link.
    link = unescape(re.search(r'href="([^"]+unit=engine-c[^"]*)"', page).group(1))  # type: ignore[union-attr]
    other = assert_html(client.get(link), 200)
    assert re.search(r'id="rul-chart"[^>]*data-unit="engine-c"', other, re.DOTALL)
    bare = assert_html(client.get("/analytics/models/engine/versions/1/rul"), 200)
    assert 'id="units-table"' not in bare
    # In Chinese; and a RUL version has no monitoring chart.
    sign_in_as(client, tenant, Role.ENGINEER, "zh_CN")
    chinese = assert_html(client.get("/analytics/models/engine/versions/1/rul", params=query), 200)
    assert heading_text(chinese) == "剩余使用寿命"
    assert "各单元，最紧急的在前" in chinese
    assert "缺少：vibration" in text_of(section(chinese, "units-table"))
    monitor = assert_html(client.get("/analytics/models/engine/versions/1/monitor"), 200)
    assert "此版本用于估计剩余使用寿命，没有监控图。" in monitor
    models = assert_html(client.get("/analytics/models"), 200)
    assert heading_text(models) == "模型"
    assert "均方根误差（留出数据，周期）" in text_of(section(models, "models-table"))
    no_devices = {**query, "devices": " , "}
    refused = assert_html(client.get("/analytics/models/engine/versions/1/rul", params=no_devices), 422)
    assert "请至少输入一个设备标识。" in refused
    assert 'id="units-table"' not in refused


# --- in a real browser ------------------------------------------------------------------------


@pytest.mark.browser
def test_charts_draw_in_a_real_browser(runtime: Runtime, chromium: str, tmp_path: Path) -> None:
    """plotly draws every chart under the console's CSP, and a click on the monitoring chart explains that sample."""
    tenant = make_tenant(runtime.db, "plant-analytics")
    data = normal_data(400)
    training, _ = rul_fleet_csv(12)
    with runtime.db.session() as session:
        service = AnalyticsService(session, engineer(tenant), runtime=runtime)
        service.train_from_file("reactor", "pca", csv_bytes(data[:300]), "normal.csv")
        service.train_from_file(
            "engine", "rul", training, "fleet.csv", variables=RUL_VARIABLES, unit_column="unit", parameters=RUL_QUICK
        )
    store(runtime, tenant, "r-101", VARIABLES, np.vstack([data[300:360], faulty(data[360:400], shift=4.0)]), 10_000)
    store(runtime, tenant, "line-1", ("thickness",), outlier_series()[:, None], 60_000)
    store(runtime, tenant, "engine-a", RUL_VARIABLES, degrading_unit(np.random.default_rng(3), 170)[:150], 60_000)
    window = {"start": START.strftime(FIELD), "end": (START + dt.timedelta(hours=3)).strftime(FIELD)}
    monitor = "/analytics/models/reactor/versions/1/monitor?" + urlencode(
        {"device": "r-101", "interval": "10", "start": START.strftime(FIELD), "end": "2026-01-05T08:16:40"}
    )
    spc_query = urlencode({"device": "line-1", "metric": "thickness", "chart": "imr", "rules": "nelson", **window})
    cycles = {"start": START.strftime(FIELD), "end": (START + dt.timedelta(minutes=150)).strftime(FIELD)}
    rul = "/analytics/models/engine/versions/1/rul?" + urlencode({"devices": "engine-a", "interval": "60", **cycles})
    problems: list[str] = []
    app = create_app(runtime=runtime, configure_logs=False)
    with serve(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(base + "/login")
            page.fill("input[name=username]", f"{tenant.name}-admin")
            page.fill("input[name=password]", tenant.admin_password)
            page.click("form.form button[type=submit]")
            page.wait_for_url(base + "/")

            page.locator("nav.nav").get_by_role("link", name="模型", exact=True).click()
            page.wait_for_url(base + "/analytics/models")
            assert page.locator("#models-table tr[data-model]").count() == 2

            page.goto(base + monitor)
            page.wait_for_selector("#monitor-chart[data-drawn=true] .main-svg")
            page.screenshot(path=tmp_path / "monitor-zh.png", full_page=True)
            # A click on a sample (as plotly reports it) opens its contributions.
            page.evaluate(
                "document.getElementById('monitor-chart').emit('plotly_click',"
                " {points: [{pointIndex: 70, data: {mode: 'lines'}}]})"
            )
            page.wait_for_url(re.compile(r".*/contributions\?.*at=2026-01-05T08%3A11%3A40\.000Z.*"))
            page.wait_for_selector("#contribution-chart-2[data-drawn=true] .main-svg")
            assert page.locator("[data-statistic=spe] tr[data-variable]").first.get_attribute("data-variable") == "flow"
            page.screenshot(path=tmp_path / "contributions-zh.png", full_page=True)

            page.goto(base + "/analytics/spc?" + spc_query)
            page.wait_for_selector("#spc-chart[data-drawn=true] .main-svg")
            assert page.locator("#signals-table tr[data-index='60']").count() >= 1
            page.screenshot(path=tmp_path / "spc-zh.png", full_page=True)

            page.goto(base + rul)
            page.wait_for_selector("#rul-chart[data-drawn=true] .main-svg")
            page.screenshot(path=tmp_path / "rul-zh.png", full_page=True)
            context.close()
        finally:
            browser.close()
    assert not problems, problems
