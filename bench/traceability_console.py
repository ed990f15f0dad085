"""The recall workbench and a product's trace page over HTTP, against the API routes doing the same work.

Generates the flour lot of `traceability_genealogy` that reaches 10,000 units (50 product lots of
200 units, 20 to a case, 10 cases to a pallet, every pallet shipped and received: 10,601
identifiers) straight into a migrated SQLite file, then, through the app with a signed-in console
session, best of `--runs`:

- the recall workbench page of the lot (the whole recall, its counts, the first 50 rows rendered)
  against `GET /api/traceability/recall?lot=...` (the same recall as JSON);
- the FSMA 204 spreadsheet from the workbench, CSV and XLSX, against the API's `format=csv|xlsx`;
- the trace page of one unit (backward and forward genealogy, whereabouts, the first page of its
  timeline, the SVG graph) against the two API genealogy calls, backward and forward.

Each page and its API twin run one after the other, `--runs` times; the best of each is kept.

Target: each spreadsheet within 5 s ("within seconds").

    .venv/bin/python bench/traceability_console.py [--runs 5] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, report, timed
from bench.traceability_genealogy import Generator, recall_lot, unit
from iip.api.app import create_app
from iip.api.deps import SESSION_COOKIE
from iip.kernel.auth import AccessService, Role
from iip.kernel.db import Database
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade

SPREADSHEET_TARGET_S = 5.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="console-bench-", dir="/tmp") as folder:
        settings = Settings(
            data_dir=Path(folder), database_url=f"sqlite:///{folder}/iip.db", log_level="WARNING", log_format="text"
        )
        db = Database(settings.effective_database_url)
        upgrade(db)
        with db.session() as session:
            access = AccessService(session)
            tenant_id = access.create_tenant("bench-console").id
            user = access.create_user(tenant_id, "bench-engineer", "bench-password-123", Role.ENGINEER)
            session_token, _record = access.open_session(user, hours=1)
            _key, api_key = access.create_api_key(tenant_id, "bench", Role.ENGINEER)
        generator = Generator(db, tenant_id)
        flour = recall_lot(generator)
        generator.flush(force=True)
        db.dispose()
        results = measure(settings, flour, unit(997, 0), session_token, api_key, args.runs)
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    report(results, record=not args.no_record)
    slow = [r for r in results if r.benchmark.startswith("recall spreadsheet") and r.ours > SPREADSHEET_TARGET_S * 1000]
    print(f"spreadsheets within {SPREADSHEET_TARGET_S:.0f} s: {'MISSED' if slow else 'met'}")


def measure(settings: Settings, lot: str, item: str, session_token: str, api_key: str, runs: int) -> list[Result]:
    app = create_app(settings, configure_logs=False)
    api = {"Authorization": f"Bearer {api_key}"}
    with TestClient(app) as client:
        client.cookies.set(SESSION_COOKIE, session_token)

        def get(path: str, *, headers: dict[str, str] | None = None, expect: str = "") -> int:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, response.text[:300]
            assert not expect or expect in response.text, f"{path} lacks {expect}"
            return len(response.content)

        lot_q = quote(lot, safe="")
        item_q = quote(item, safe="")
        page = client.get(f"/traceability/recall?identifier={lot_q}")
        affected = page.text.split('id="affected-count">', 1)[1].split("<", 1)[0]
        assert affected == "10601", affected
        plan: dict[str, Callable[[], object]] = {
            "page": lambda: get(f"/traceability/recall?identifier={lot_q}", expect="recall-table"),
            "api": lambda: get(f"/api/traceability/recall?lot={lot_q}", headers=api),
            "csv": lambda: get(f"/traceability/recall/export?identifier={lot_q}&format=csv"),
            "api csv": lambda: get(f"/api/traceability/recall?lot={lot_q}&format=csv", headers=api),
            "xlsx": lambda: get(f"/traceability/recall/export?identifier={lot_q}&format=xlsx"),
            "api xlsx": lambda: get(f"/api/traceability/recall?lot={lot_q}&format=xlsx", headers=api),
            "trace": lambda: get(f"/traceability/trace?epc={item_q}", expect="trace-graph"),
            "api trace": lambda: (
                get(f"/epcis/genealogy/{item_q}?direction=backward", headers=api),
                get(f"/epcis/genealogy/{item_q}?direction=forward", headers=api),
            ),
        }
        # Each page right after its API twin, run after run, so that the load of the moment weighs on both alike.
        seen: dict[str, list[float]] = {name: [] for name in plan}
        for _ in range(runs):
            for name, call in plan.items():
                seen[name].append(timed(call))
        timings = {name: min(values) for name, values in seen.items()}
    app.state.runtime.db.dispose()
    ms = {name: seconds * 1000 for name, seconds in timings.items()}
    title = f"recall of a lot reaching {affected} identifiers"
    best = f"best of {runs}"
    return [
        Result(f"recall workbench page, {title}", best, ms["page"], "API recall as JSON", ms["api"], "ms", False),
        Result(f"recall spreadsheet CSV, {title}", best, ms["csv"], "API format=csv", ms["api csv"], "ms", False),
        Result(f"recall spreadsheet XLSX, {title}", best, ms["xlsx"], "API format=xlsx", ms["api xlsx"], "ms", False),
        Result(
            "trace page of a unit (graph, timeline, whereabouts)",
            best,
            ms["trace"],
            "API genealogy backward + forward",
            ms["api trace"],
            "ms",
            False,
        ),
    ]


if __name__ == "__main__":
    main()
