"""Shared fixtures: a migrated database on SQLite or the real PostgreSQL, an app, tenants and keys."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from iip.api.app import create_app
from iip.kernel import auth as kernel_auth
from iip.kernel.auth import AccessService, Role
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade
from tests.cli.conftest import InProcessIip
from tests.services import POSTGRES_URL, require_service

BACKENDS = ("sqlite", "postgresql")

# Passwords and secrets are hashed with argon2id at its lowest work factor in this process: the same
# code hashes and verifies them, but the production cost (about 0.15 s a hash) paid thousands of
# times was minutes of the suite. Subprocesses the tests start keep the production cost.
kernel_auth._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (a copy of `template`, if given), dropped afterwards."""
    url = make_url(POSTGRES_URL)
    require_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    name = f"iip_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        copy_of = f' TEMPLATE "{template}" STRATEGY WAL_LOG' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{copy_of}'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'iip.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class MigratedTemplates:
    """One migrated database per backend and test process, copied for every test that asks for a
    migrated one: a copy costs a fraction of running every migration again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sqlite_file: Path | None = None
        self.postgres_name: str | None = None

    @contextmanager
    def copy(self, backend: str, tmp_path: Path) -> Iterator[str]:
        if backend == "sqlite":
            target = tmp_path / "iip.db"
            shutil.copyfile(self._sqlite(), target)
            yield f"sqlite:///{target}"
            return
        with postgres_database(template=self._postgres()) as url:
            yield url

    def _sqlite(self) -> Path:
        if self.sqlite_file is None:
            path = self.folder / "template.db"
            db = Database(f"sqlite:///{path}")
            upgrade(db)
            db.dispose()  # the last connection closing folds the WAL into the file
            self.sqlite_file = path
        return self.sqlite_file

    def _postgres(self) -> str:
        if self.postgres_name is None:
            url = make_url(POSTGRES_URL)
            require_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
            name = f"iip_tpl_{uuid.uuid4().hex[:12]}"
            admin = create_engine(url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            db = Database(url.set(database=name).render_as_string(hide_password=False))
            upgrade(db)
            db.dispose()  # a template must have no connections while it is copied
            self.postgres_name = name
        return self.postgres_name

    def drop(self) -> None:
        if self.postgres_name is not None:
            admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.postgres_name}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("migrated-template"))
    yield templates
    templates.drop()


@pytest.fixture
def db_url(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, migrated_templates: MigratedTemplates
) -> Iterator[str]:
    # A test that will migrate its database gets a copy of one already migrated; `migrated_db` then
    # finds it at head. Every other test gets an empty database, as before.
    if "migrated_db" in request.fixturenames:
        with migrated_templates.copy(backend, tmp_path) as url:
            yield url
        return
    with database_url(backend, tmp_path) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=db_url, log_format="text", log_level="WARNING")


@pytest.fixture
def migrated_db(settings: Settings) -> Iterator[Database]:
    db = Database(settings.effective_database_url)
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def runtime(settings: Settings, migrated_db: Database) -> Runtime:
    rt = Runtime.build(settings)
    rt.db.dispose()
    rt.db = migrated_db
    return rt


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(runtime=runtime, configure_logs=False)
    with TestClient(app) as test_client:
        yield test_client


@dataclass(frozen=True)
class CliDatabase:
    """A migrated database shared by a module of CLI tests, and the data dir the commands use."""

    db: Database
    url: str
    folder: Path

    def in_process(self, monkeypatch: pytest.MonkeyPatch, cwd: Path) -> InProcessIip:
        """`iip` run in this process against this database, from `cwd`."""
        monkeypatch.chdir(cwd)
        env = {"IIP_DATA_DIR": str(self.folder / "var"), "IIP_DATABASE_URL": self.url, "IIP_LOG_FORMAT": "text"}
        return InProcessIip(monkeypatch, env)


@pytest.fixture(scope="module", params=BACKENDS)
def cli_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, migrated_templates: MigratedTemplates
) -> Iterator[CliDatabase]:
    """One migrated database per backend for a module of CLI tests; each test makes a tenant of its own."""
    folder = tmp_path_factory.mktemp("cli")
    with migrated_templates.copy(str(request.param), folder) as url:
        db = Database(url)
        yield CliDatabase(db, url, folder)
        db.dispose()


@pytest.fixture
def iip(cli_database: CliDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> InProcessIip:
    """`iip` in this process on the module's `cli_database` (tests/cli/ runs the real script instead)."""
    return cli_database.in_process(monkeypatch, tmp_path)


@dataclass(frozen=True)
class TenantFixture:
    """A tenant with an admin user and one API key per role."""

    id: str
    name: str
    admin_user_id: str
    admin_password: str
    keys: dict[Role, str]

    def headers(self, role: Role = Role.ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def make_tenant(db: Database, name: str) -> TenantFixture:
    with db.session() as session:
        service = AccessService(session)
        tenant = service.create_tenant(name)
        password = f"pw-{uuid.uuid4().hex}"
        user = service.create_user(tenant.id, f"{name}-admin", password, Role.ADMIN)
        keys = {role: service.create_api_key(tenant.id, role.value, role)[1] for role in Role}
        return TenantFixture(tenant.id, tenant.name, user.id, password, keys)


@pytest.fixture
def tenant_a(migrated_db: Database) -> TenantFixture:
    return make_tenant(migrated_db, "tenant-a")


@pytest.fixture
def tenant_b(migrated_db: Database) -> TenantFixture:
    return make_tenant(migrated_db, "tenant-b")
