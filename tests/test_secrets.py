"""Secrets stay secret: every example job that connects anywhere, run with a distinctive password
in ``password``, in a jdbcUrl and in a SQLAlchemy url; then every file the run left behind
(state folder, checkpoints, metrics file, dirty records, output files), its output and every
row of the MySQL databases it wrote (commit and history tables) are scanned for the password.

The MySQL jobs run as a fresh MariaDB account with that password (the test server's root has
none); the SQLAlchemy url is a PostgreSQL one (its trust authentication takes any password, so
the job connects with the password in the url). Example jobs that connect nowhere
(``quickstart.yaml``, ``chunjun_stream.json``, ``stream_to_hdfs_orc.yaml``) have no place for a
password.
"""

from __future__ import annotations

import importlib.util
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import REPO, RunCli
from tests.servers.mariadb import MariaDB, ensure_server

JOBS = REPO / "jobs"
POSTGRES = "postgresql+psycopg://root@127.0.0.1:5432/test"


@dataclass
class Account:
    """A MariaDB account with a distinctive password, and a database filled for the examples."""

    server: MariaDB
    user: str
    password: str
    database: str
    target: str

    def execute(self, *statements: str) -> None:
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def tables(self, database: str | None = None) -> list[str]:
        conn = self.server.connect(database or self.database)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW TABLES")
                return [str(row[0]) for row in cur.fetchall()]
        finally:
            conn.close()

    def dump(self) -> str:
        """Every row of both databases as text (the writers' commit and history tables too)."""
        parts: list[str] = []
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                for database in (self.database, self.target):
                    for table in self.tables(database):
                        cur.execute(f"SELECT * FROM `{database}`.`{table}`")
                        parts.extend(repr(row) for row in cur.fetchall())
        finally:
            conn.close()
        return "\n".join(parts)

    def scalar(self, statement: str) -> object:
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                row = cur.fetchone()
        finally:
            conn.close()
        return row[0] if row else None


def _secret() -> str:
    return f"Zq{uuid.uuid4().hex[:10]}Pw{uuid.uuid4().hex[:6]}"


def _create_orders(server: MariaDB, database: str, rows: int) -> None:
    """The benchmark's ``orders`` table (bench/orders.py)."""
    spec = importlib.util.spec_from_file_location(
        "syncx_bench_orders", REPO / "bench" / "orders.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conn = server.connect(database)
    try:
        module.create_orders(conn, database, rows)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def account() -> Iterator[Account]:
    server = ensure_server()
    user, password = f"syncx_s_{uuid.uuid4().hex[:8]}", _secret()
    found = Account(server, user, password, server.create_database("syncx_sec"), "")
    found.target = server.create_database("syncx_sect")
    for host in ("%", "localhost", "127.0.0.1"):
        found.execute(
            f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{host}'",
        )
    _create_orders(server, found.database, 3000)
    found.execute(f"CREATE TABLE `{found.database}`.orders_copy LIKE `{found.database}`.orders")
    try:
        yield found
    finally:
        for host in ("%", "localhost", "127.0.0.1"):
            found.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        server.drop_database(found.database)
        server.drop_database(found.target)


def _password_in_urls(text: str, password: str) -> str:
    """The job text with ``password=...`` added to every MySQL jdbcUrl (and ``password`` empty)."""

    def add(match: re.Match[str]) -> str:
        url = match.group(0)
        return f"{url}{'&' if '?' in url else '?'}password={password}"

    return re.sub(r"jdbc:mysql://[^\"'\s\]]+", add, text)


def _leaks(root: Path, secret: str, *outputs: str) -> list[str]:
    """Where ``secret`` appears: among ``outputs`` (stdout, stderr, a table dump) or in a file
    under ``root``."""
    found = [f"output #{i}" for i, text in enumerate(outputs) if secret in text]
    found += [
        str(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and secret.encode() in path.read_bytes()
    ]
    return found


MYSQL_JOBS = [
    "mysql_to_mysql.json",
    "mysql_to_parquet.yaml",
    "mysql_incremental.yaml",
    "mysql_to_hdfs_parquet.yaml",
    "mysql_to_hdfs_chunjun.json",
    "binlog_to_parquet.yaml",
    "binlog_chunjun.json",
    "binlog_to_mysql.yaml",
]


def _journal(account: Account) -> str:
    return str(account.scalar("SHOW MASTER STATUS"))


RUNS = [
    (name, where)
    for name in MYSQL_JOBS
    for where in ("password", "jdbcUrl")
    if where == "password" or "jdbc:mysql://" in (JOBS / name).read_text(encoding="utf-8")
]
"""Each job with the password in ``password``, and in its jdbcUrl where it has one."""


@pytest.mark.mysql
@pytest.mark.parametrize(("name", "where"), RUNS)
def test_mysql_example_jobs_leave_the_password_nowhere(
    account: Account,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    run_cli: RunCli,
    name: str,
    where: str,
) -> None:
    job = JOBS / name
    if where == "jdbcUrl":
        copy = tmp_path_factory.mktemp("job") / name
        copy.write_text(_password_in_urls(job.read_text(encoding="utf-8"), account.password))
        job = copy
    given = account.password if where == "password" else ""
    if name == "binlog_to_mysql.yaml":  # each source table into its namesake
        account.execute(
            f"DROP DATABASE IF EXISTS `{account.target}`",
            f"CREATE DATABASE `{account.target}`",
            *(
                f"CREATE TABLE `{account.target}`.`{table}` LIKE `{account.database}`.`{table}`"
                for table in account.tables()
            ),
        )
    values = {
        "mysql_host": "127.0.0.1",
        "mysql_port": str(account.server.port),
        "mysql_user": account.user,
        "mysql_password": given,
        "mysql_db": account.database,
        "source_db": account.database,
        "target_db": account.target,
        "table": "orders",
        "journal_name": _journal(account),
        "out": str(tmp_path / "out"),
        "path": str(tmp_path / "hdfs" / "orders"),
    }
    env = {
        "MYSQL_HOST": "127.0.0.1",
        "MYSQL_PORT": str(account.server.port),
        "MYSQL_USER": account.user,
        "MYSQL_PASSWORD": given,
    }
    args = [arg for key, value in values.items() for arg in ("-p", f"{key}={value}")]
    if name == "mysql_to_mysql.json":
        account.execute(f"TRUNCATE TABLE `{account.database}`.orders_copy")
    done = run_cli(
        "run",
        job,
        *args,
        "--state-dir",
        tmp_path / "state",
        "--metrics-file",
        tmp_path / "metrics.json",
        "--debug",
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "metrics.json").exists()
    assert list((tmp_path / "state").rglob("*.json")), "no checkpoint or state file was written"
    assert _leaks(tmp_path, account.password, done.stdout, done.stderr, account.dump()) == []


@pytest.mark.mysql
def test_dirty_records_and_a_failed_run_leave_the_password_nowhere(
    account: Account, tmp_path: Path, run_cli: RunCli
) -> None:
    """Rows the target refuses become dirty records (with the server's message), the job fails
    past ``errorLimit``: the password is in neither the records nor the failure."""
    narrow = f"narrow_{uuid.uuid4().hex[:8]}"
    account.execute(
        f"CREATE TABLE `{account.database}`.{narrow} LIKE `{account.database}`.orders",
        f"ALTER TABLE `{account.database}`.{narrow} MODIFY sku VARCHAR(2)",
    )
    text = (JOBS / "mysql_to_mysql.json").read_text(encoding="utf-8")
    job = tmp_path / "jobs" / "narrow.json"
    job.parent.mkdir()
    job.write_text(
        _password_in_urls(text, account.password)
        .replace('"orders_copy"', f'"{narrow}"')
        .replace('"semantic": "exactly-once"', '"semantic": "at-least-once"')
        .replace('"errorLimit": {"record": 0}', '"errorLimit": {"record": 5}'),
        encoding="utf-8",
    )
    done = run_cli(
        "run",
        job,
        "-p",
        f"mysql_port={account.server.port}",
        "-p",
        f"mysql_user={account.user}",
        "-p",
        f"mysql_db={account.database}",
        "--state-dir",
        tmp_path / "state",
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "dirty records exceed setting.errorLimit.record = 5" in done.stderr
    dirty = list((tmp_path / "state").rglob("dirty/*"))
    assert dirty, "no dirty record was stored"
    job.unlink()
    assert _leaks(tmp_path, account.password, done.stdout, done.stderr) == []


@pytest.mark.mysql
def test_a_wrong_password_is_not_echoed(account: Account, tmp_path: Path, run_cli: RunCli) -> None:
    wrong = _secret()
    done = run_cli(
        "run",
        JOBS / "mysql_to_parquet.yaml",
        "-p",
        f"mysql_port={account.server.port}",
        "-p",
        f"mysql_user={account.user}",
        "-p",
        f"mysql_password={wrong}",
        "-p",
        f"mysql_db={account.database}",
        "-p",
        f"out={tmp_path / 'out'}",
        "--state-dir",
        tmp_path / "state",
        timeout=300,
    )
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr
    assert _leaks(tmp_path, wrong, done.stdout, done.stderr) == []


@pytest.fixture
def postgres_database() -> Iterator[str]:
    engine = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    name = f"syncx_sec_{uuid.uuid4().hex[:12]}"
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield name
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


def test_sqlalchemy_url_password_is_left_nowhere(
    postgres_database: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    run_cli: RunCli,
) -> None:
    """``sqlite_to_sqlite.yaml`` writing through a PostgreSQL url that carries the password."""
    password = _secret()
    source = tmp_path / "source.db"
    with sa.create_engine(f"sqlite:///{source}").begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT)"))
        conn.execute(
            sa.text("INSERT INTO orders VALUES (:id, :note)"),
            [{"id": i, "note": f"n{i}"} for i in range(1, 2001)],
        )
    target = f"postgresql+psycopg://root:{password}@127.0.0.1:5432/{postgres_database}"
    engine = sa.create_engine(target)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id BIGINT PRIMARY KEY, note TEXT)"))
    job = tmp_path_factory.mktemp("job") / "sqlite_to_postgres.yaml"
    text = (JOBS / "sqlite_to_sqlite.yaml").read_text(encoding="utf-8")
    assert "sqlite:///${target_db}" in text
    job.write_text(text.replace("sqlite:///${target_db}", target), encoding="utf-8")
    done = run_cli(
        "run",
        job,
        "-p",
        f"source_db={source}",
        "--state-dir",
        tmp_path / "state",
        "--metrics-file",
        tmp_path / "metrics.json",
        "--debug",
    )
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar() == 2000
    engine.dispose()
    assert _leaks(tmp_path, password, done.stdout, done.stderr) == []
    shown = run_cli(
        "checkpoints", "show", job, "-p", f"source_db={source}", "--state-dir", tmp_path / "state"
    )
    assert shown.returncode == 0, shown.stderr
    assert password not in shown.stdout + shown.stderr


def test_the_scan_finds_a_password(tmp_path: Path) -> None:
    """The scan itself can fail: a file holding the password is found."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "checkpoint.json").write_text('{"url": "x:Secret1@h"}')
    assert _leaks(tmp_path, "Secret1", "out") == [str(tmp_path / "a" / "b" / "checkpoint.json")]
    assert _leaks(tmp_path, "Secret1", "Secret1 here") == [
        "output #0",
        str(tmp_path / "a" / "b" / "checkpoint.json"),
    ]


@pytest.mark.parametrize(
    "settings",
    [
        {
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                'username="syncx" password="{secret}";'
            ),
        },
        {"sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "syncx", "sasl.password": "{secret}"},
    ],
    ids=["jaas-config", "sasl-password"],
)
def test_kafka_sasl_password_is_left_nowhere(
    kafka_bootstrap: str, tmp_path: Path, run_cli: RunCli, settings: dict[str, str]
) -> None:
    """The Kafka example with SASL credentials in ``consumerSettings`` (ChunJun's JAAS config
    or librdkafka's keys) against the test broker, which offers no SASL: the run fails, and
    neither its output (with ``--debug`` tracebacks) nor anything it left holds the password."""
    secret = _secret()
    sasl = {k: v.replace("{secret}", secret) for k, v in settings.items()}
    text = (JOBS / "kafka_to_parquet.yaml").read_text(encoding="utf-8")
    extra = "".join(f"            {k}: '{v}'\n" for k, v in sasl.items())
    marker = "            bootstrap.servers: ${KAFKA_BOOTSTRAP:-127.0.0.1:9092}\n"
    assert marker in text
    text = text.replace(marker, marker + "            security.protocol: SASL_PLAINTEXT\n" + extra)
    job = tmp_path / "kafka_sasl.yaml"
    job.write_text(text, encoding="utf-8")
    for flags in ([], ["--debug"]):
        done = run_cli(
            "run",
            job,
            "-p",
            f"KAFKA_BOOTSTRAP={kafka_bootstrap}",
            "-p",
            f"out={tmp_path / 'out'}",
            "--state-dir",
            tmp_path / "state",
            *flags,
            timeout=180,
        )
        assert done.returncode != 0, done.stderr[-2000:]
        assert _leaks(tmp_path, secret, done.stdout, done.stderr, job.name) == [str(job)]
