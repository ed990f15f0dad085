"""A fault classifier evaluated on a new labelled file (API and CLI), on the Tennessee Eastman data.

Trained on the training runs d00 (normal), d01 and d02 (faults 1 and 2); evaluated on the test runs,
normal until sample 160 and faulty afterwards. The data set lives outside the repository
(`../shared/datasets/tep/`): the tests skip without it, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench import tep
from fastapi.testclient import TestClient

from iip.analytics.fitting import load_model
from iip.analytics.models import ModelVersion
from iip.analytics.monitoring.classify import FaultClassifier
from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from tests.analytics.support import csv_bytes
from tests.api.support import assert_problem
from tests.cli.conftest import InProcessIip, one_line
from tests.conftest import TenantFixture

if not tep.available():
    if os.environ.get("CI") == "true":
        pytest.fail(f"Tennessee Eastman data not found at {tep.TEP_DIR}", pytrace=False)
    pytest.skip(f"Tennessee Eastman data not found at {tep.TEP_DIR}", allow_module_level=True)

API = "/api/analytics"
CLASSES = {0: "normal", 1: "fault 1", 2: "fault 2"}


def training_csv() -> bytes:
    runs = [tep.training(fault) for fault in CLASSES]
    labels = [CLASSES[fault] for fault, run in zip(CLASSES, runs, strict=True) for _ in range(run.shape[0])]
    return csv_bytes(np.vstack(runs), tep.VARIABLES, labels=labels)


def evaluation_rows() -> tuple[np.ndarray[Any, Any], list[str]]:
    """The test runs: d00_te normal throughout, d01_te and d02_te faulty from sample 160 on."""
    rows = [tep.evaluation_run(0), tep.evaluation_run(1)[tep.FAULT_START :], tep.evaluation_run(2)[tep.FAULT_START :]]
    labels = [name for name, run in zip(CLASSES.values(), rows, strict=True) for _ in range(run.shape[0])]
    return np.vstack(rows), labels


def expected_confusion(
    classifier: FaultClassifier, data: np.ndarray[Any, Any], labels: list[str]
) -> np.ndarray[Any, Any]:
    """Counted here from the classifier's own predictions, run by run (its first `lags` rows unclassified)."""
    classes = list(classifier.classes)
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    start = 0
    for end in [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]] + [len(labels)]:
        for guess in classifier.predict(data[start:end]):
            if guess is not None:
                matrix[classes.index(labels[start]), classes.index(guess)] += 1
        start = end
    return matrix


def post_file(client: TestClient, tenant: TenantFixture, content: bytes, **fields: str) -> Any:
    return client.post(
        f"{API}/evaluations",
        files={"file": ("tep-test.csv", content, "text/csv")},
        data={"model": "faults", **fields},
        headers=tenant.headers(Role.VIEWER),
    )


def test_a_classifier_is_evaluated_on_a_new_labelled_file(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    trained = client.post(
        f"{API}/models/file",
        files={"file": ("tep-train.csv", training_csv(), "text/csv")},
        data={"name": "faults", "kind": "classifier", "label_column": "label", "parameters": '{"lags": 1}'},
        headers=tenant_a.headers(Role.ENGINEER),
    )
    assert trained.status_code == 201, trained.text
    data, labels = evaluation_rows()
    response = post_file(client, tenant_a, csv_bytes(data, tep.VARIABLES, labels=labels), label_column="label")
    assert response.status_code == 200, response.text
    found = response.json()
    assert (found["name"], found["version"], found["rows"]) == ("faults", 1, data.shape[0])
    classes = found["confusion"]["classes"]
    assert classes == ["fault 1", "fault 2", "normal"]
    matrix = np.array(found["confusion"]["matrix"])
    # The matrix is the classifier's own predictions counted per true class; every figure follows from it.
    version = client.get(f"{API}/models/faults/versions/1", headers=tenant_a.headers()).json()
    assert version["kind"] == "classifier"
    with runtime.db.session() as session:
        stored = session.get(ModelVersion, version["id"])
        assert stored is not None
        classifier = load_model(stored.state)
    assert isinstance(classifier, FaultClassifier)
    np.testing.assert_array_equal(matrix, expected_confusion(classifier, data, labels))
    assert found["classified_rows"] == int(matrix.sum()) == data.shape[0] - 3  # one lag per run
    assert found["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-6)
    for k, name in enumerate(classes):
        assert found["per_class_recall"][name] == pytest.approx(matrix[k, k] / matrix[k].sum(), abs=1e-6)
        assert found["per_class_precision"][name] == pytest.approx(matrix[k, k] / matrix[:, k].sum(), abs=1e-6)
    # Faults 1 and 2 are easy to tell apart on these data; normal rows are mostly recognised.
    assert found["per_class_recall"]["fault 1"] > 0.9
    assert found["per_class_recall"]["fault 2"] > 0.9
    assert found["accuracy"] > 0.8


def test_bad_evaluation_files_name_the_problem(client: TestClient, tenant_a: TenantFixture) -> None:
    trained = client.post(
        f"{API}/models/file",
        files={"file": ("tep-train.csv", training_csv(), "text/csv")},
        data={"name": "faults", "kind": "classifier", "label_column": "label"},
        headers=tenant_a.headers(Role.ENGINEER),
    )
    assert trained.status_code == 201, trained.text
    data, labels = evaluation_rows()
    data, labels = data[:300], labels[:300]
    no_labels = assert_problem(post_file(client, tenant_a, csv_bytes(data, tep.VARIABLES)), 422, "label_required")
    assert "name the label column" in no_labels["detail"]
    absent = assert_problem(
        post_file(client, tenant_a, csv_bytes(data, tep.VARIABLES), label_column="class"), 422, "scoring_data_invalid"
    )
    assert "the label column 'class' is not in 'tep-test.csv'" in absent["detail"]
    narrow = csv_bytes(data[:, 1:], tep.VARIABLES[1:], labels=labels)
    missing = assert_problem(post_file(client, tenant_a, narrow, label_column="label"), 422, "scoring_data_invalid")
    assert "mismatched columns: 'XMEAS(1)' not in 'tep-test.csv'" in missing["detail"]
    strange = csv_bytes(data, tep.VARIABLES, labels=["normal"] * 100 + ["fault 9"] * 200)
    unknown = assert_problem(post_file(client, tenant_a, strange, label_column="label"), 422, "scoring_data_invalid")
    assert (
        "unknown labels in 'label': 'fault 9'; the classifier knows 'fault 1', 'fault 2', 'normal'"
        in (unknown["detail"])
    )
    blank = csv_bytes(data, tep.VARIABLES, labels=["normal"] * 10 + [""] + ["normal"] * 289)
    empty = assert_problem(post_file(client, tenant_a, blank, label_column="label"), 422, "scoring_data_invalid")
    assert "missing label at row 11" in empty["detail"]


@pytest.fixture
def tenant(iip: InProcessIip) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert iip("tenant", "create", name).exit_code == 0
    return name


def test_iip_analytics_evaluate_reports_a_classifier(iip: InProcessIip, tenant: str, tmp_path: Path) -> None:
    source = tmp_path / "tep-train.csv"
    source.write_bytes(training_csv())
    result = iip(
        "analytics", "train", "--tenant", tenant, "--name", "faults", "--kind", "classifier", "--csv", str(source),
        "--label-column", "label",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data, labels = evaluation_rows()
    labelled = tmp_path / "tep-test.csv"
    labelled.write_bytes(csv_bytes(data, tep.VARIABLES, labels=labels))
    command = ("analytics", "evaluate", "faults@1", str(labelled), "--tenant", tenant, "--label-column", "label")
    found = json.loads(iip(*command, "--json").stdout)
    assert found["model"] == "faults@1"
    assert found["rows"] == found["classified_rows"] == data.shape[0]  # no lags: every row classified
    matrix = np.array(found["confusion"]["matrix"])
    assert found["accuracy"] == pytest.approx(np.trace(matrix) / data.shape[0], abs=1e-6)
    out = tmp_path / "predicted.csv"
    text = iip(*command, "--out", str(out))
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith(f"faults@1 on tep-test.csv: accuracy {100 * found['accuracy']:.2f}% on ")
    assert "fault 1: recall" in text.stdout
    assert "confusion (rows: true class, columns: predicted):" in text.stdout
    predicted = out.read_text().splitlines()
    assert predicted[0] == "row,label,predicted"
    assert len(predicted) == data.shape[0] + 1
    # No label column, or a label the classifier never saw: one readable line, exit 1.
    bare = iip("analytics", "evaluate", "faults@1", str(labelled), "--tenant", tenant)
    assert bare.exit_code == 1
    assert "name the label column" in one_line(bare.stderr)
    strange = tmp_path / "strange.csv"
    strange.write_bytes(csv_bytes(data[:50], tep.VARIABLES, labels=["fault 7"] * 50))
    refused = iip("analytics", "evaluate", "faults@1", str(strange), "--tenant", tenant, "--label-column", "label")
    assert refused.exit_code == 1
    assert "unknown labels in 'label': 'fault 7'" in one_line(refused.stderr)
