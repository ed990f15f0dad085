"""`iip run --demo`: the server starts, answers /healthz, and keeps the demo login across restarts."""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from iip.cli.demo import DEMO_USER, LOGIN_FILE
from tests.cli.conftest import IIP, free_port, outer_environment

STARTUP_LIMIT_S = 120
DEMO_LOGIN = re.compile(r"demo login: (\S+) / (\S+) \(tenant (\S+)\)")


def healthz(port: int) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            body: dict[str, str] = json.loads(response.read())
            return body if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@contextmanager
def running_server(workdir: Path, log_name: str, *options: str) -> Iterator[tuple[int, Path]]:
    """`iip run --demo` on a free port; yields (port, stdout file) once /healthz answers; stops it after."""
    port = free_port()
    stdout = workdir / f"{log_name}.out"
    stderr = workdir / f"{log_name}.err"
    env = {
        **outer_environment(),
        "IIP_DATA_DIR": str(workdir / "var"),
        "IIP_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            [str(IIP), "run", "--demo", "--port", str(port), *options], cwd=workdir, env=env, stdout=out, stderr=err
        )
        try:
            deadline = time.monotonic() + STARTUP_LIMIT_S
            while healthz(port) is None:
                if process.poll() is not None:
                    pytest.fail(f"iip run exited with {process.returncode}: {stderr.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"/healthz did not answer within {STARTUP_LIMIT_S} s: {stderr.read_text()[-2000:]}")
                time.sleep(0.2)
            yield port, stdout
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                returncode = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
    # The servers shut down gracefully on SIGTERM; uvicorn then re-raises the signal so the exit status reports it.
    assert returncode in {0, -signal.SIGTERM}, f"iip run exited with {returncode}: {stderr.read_text()[-2000:]}"
    if "granian" not in options:
        assert "Application shutdown complete" in stderr.read_text()


def demo_login(stdout: Path) -> tuple[str, str, str]:
    match = DEMO_LOGIN.search(stdout.read_text())
    assert match is not None, stdout.read_text()
    username, password, tenant = match.groups()
    return username, password, tenant


def test_run_demo_starts_and_keeps_its_login(tmp_path: Path) -> None:
    with running_server(tmp_path, "first") as (port, stdout):
        health = healthz(port)
        assert health is not None
        assert health["status"] == "ok"
        username, password, tenant = demo_login(stdout)
    assert username == DEMO_USER
    assert tenant == "demo"
    assert len(password) >= 10

    login_file = tmp_path / "var" / LOGIN_FILE
    assert login_file.read_text().strip() == password
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    assert (tmp_path / "var" / "iip.db").is_file()

    with running_server(tmp_path, "second") as (_port, stdout):
        assert demo_login(stdout) == (username, password, tenant)


def test_run_on_granian_with_two_workers(tmp_path: Path) -> None:
    with running_server(tmp_path, "granian", "--server", "granian", "--workers", "2") as (port, stdout):
        health = healthz(port)
        assert health is not None
        assert health["status"] == "ok"
        assert demo_login(stdout)[0] == DEMO_USER
        # An unknown handle: the Handle API's own 404 answer, through the full application.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/handles/88.999/none", timeout=5)
        assert refused.value.code == 404
        assert json.loads(refused.value.read())["responseCode"] == 100
