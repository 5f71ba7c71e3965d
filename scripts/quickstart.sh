#!/usr/bin/env bash
# syncx in one command: set up, start a private MariaDB, seed a small shop database, then
#   1. migrate its `orders` table to Parquet in the Hive layout (jobs/quickstart.yaml),
#   2. insert new orders and run the same job again: only the new rows move (the watermark),
#   3. replicate `orders` and `customers` through the binlog into a replica database
#      (jobs/quickstart_cdc.yaml, stopAt: now), apply updates and deletes, catch up, compare.
#
# Usage: scripts/quickstart.sh          run it all (again: it starts over from a fresh seed)
#        scripts/quickstart.sh --stop   stop the quickstart's MariaDB
#
# Everything lives under out/quickstart/ (QUICKSTART_DIR): the server's data, the Parquet
# warehouse, the jobs' state. The server listens on 127.0.0.1:3319 (QUICKSTART_PORT), root
# without password; it is scripts/mariadb-test-server.sh, the one the tests use, on its own port.
# SYNCX_PYTHON=/path/to/python skips the setup and runs syncx with that interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
qs_dir="$(realpath -m -- "${QUICKSTART_DIR:-out/quickstart}")"
port="${QUICKSTART_PORT:-3319}"
server() {
    SYNCX_TEST_MYSQL_PORT="$port" SYNCX_TEST_MYSQL_DIR="$qs_dir/mariadb" \
        scripts/mariadb-test-server.sh "$@"
}

if [[ "${1:-}" == "--stop" ]]; then
    server stop
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--stop]" >&2
    exit 2
fi

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

if [[ -n "${SYNCX_PYTHON:-}" ]]; then
    py="$SYNCX_PYTHON"
    syncx=("$py" -c "from sync.cli import main; main()")
    shown="syncx"
else
    step "Setting up syncx in .venv"
    scripts/setup.sh all
    py="$root/.venv/bin/python"
    syncx=("$root/.venv/bin/syncx")
    shown=".venv/bin/syncx"
fi

step "Starting MariaDB on 127.0.0.1:$port (data in $qs_dir/mariadb)"
server start
warehouse="$qs_dir/warehouse"
state="$qs_dir/state"
rm -rf "$warehouse" "$state"
day="$(date +%F)"
job_args=(-p "mysql_port=$port" -p "warehouse=$warehouse" -p "dt=$day")

shop() { QS_PORT="$port" QS_WAREHOUSE="$warehouse" "$py" - "$@" <<'PY'
"""The quickstart's database work: seed, add orders, change some, show, compare."""
import os
import sys

import pymysql

SHOP, REPLICA = "quickstart_shop", "quickstart_replica"
TABLES = {
    "customers": """(
        id INT PRIMARY KEY,
        name VARCHAR(100) NOT NULL,
        email VARCHAR(200) NOT NULL UNIQUE,
        country CHAR(2) NOT NULL,
        birthday DATE NULL,
        vip BOOLEAN NOT NULL DEFAULT FALSE,
        balance DECIMAL(12,2) NOT NULL DEFAULT 0,
        notes TEXT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
    )""",
    "orders": """(
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        customer_id INT NOT NULL,
        status ENUM('new','paid','shipped','delivered','cancelled') NOT NULL,
        qty SMALLINT UNSIGNED NOT NULL,
        price DECIMAL(10,2) NOT NULL,
        discount DOUBLE NULL,
        gift BOOLEAN NOT NULL DEFAULT FALSE,
        note VARCHAR(200) NULL,
        details JSON NULL,
        ordered_on DATE NOT NULL,
        delivery_window TIME NULL,
        receipt VARBINARY(16) NULL,
        created_at DATETIME(6) NOT NULL,
        updated_at DATETIME(6) NOT NULL,
        KEY (updated_at)
    )""",
}
STATUS = "ELT(1 + seq % 5, 'new','paid','shipped','delivered','cancelled')"
ORDER_VALUES = f"""customer_id, status, qty, price, discount, gift, note, details, ordered_on,
    delivery_window, receipt, created_at, updated_at) SELECT
    1 + seq % 500, {STATUS}, 1 + seq % 7, ROUND(5 + (seq * 7919 % 20000) / 100, 2),
    IF(seq % 4 = 0, NULL, (seq % 30) / 100), seq % 10 = 0,
    IF(seq % 3 = 0, NULL, CONCAT('order #', seq)),
    IF(seq % 5 = 0, NULL, JSON_OBJECT('items', 1 + seq % 7, 'source', IF(seq % 2, 'web', 'app'))),
    DATE('2024-01-01') + INTERVAL (seq % 366) DAY,
    IF(seq % 6 = 0, NULL, SEC_TO_TIME(28800 + seq % 36000)),
    IF(seq % 8 = 0, NULL, UNHEX(LPAD(HEX(seq), 8, '0'))),"""


def connect(database=None):
    return pymysql.connect(host="127.0.0.1", port=int(os.environ["QS_PORT"]), user="root",
                           database=database, autocommit=True)


def run(conn, *statements):
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        return cur.fetchall()


def seed():
    conn = connect()
    for db in (SHOP, REPLICA):
        run(conn, f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}")
        for table, columns in TABLES.items():
            run(conn, f"CREATE TABLE {db}.{table} {columns}")
    conn = connect(SHOP)  # seq_1_to_N (the sequence engine) needs a current database
    run(conn, f"""INSERT INTO {SHOP}.customers (id, name, email, country, birthday, vip, balance,
        notes, created_at) SELECT seq, CONCAT('Customer ', seq), CONCAT('c', seq, '@example.com'),
        ELT(1 + seq % 4, 'DE', 'FR', 'US', 'JP'),
        IF(seq % 9 = 0, NULL, DATE('1960-01-01') + INTERVAL (seq * 37 % 15000) DAY),
        seq % 10 = 0, (seq * 31 % 100000) / 100, IF(seq % 2, NULL, 'prefers e-mail'),
        TIMESTAMP('2023-01-01') + INTERVAL seq HOUR FROM seq_1_to_500""")
    run(conn, f"""INSERT INTO {SHOP}.orders ({ORDER_VALUES}
        TIMESTAMP('2024-01-01') + INTERVAL seq MINUTE,
        TIMESTAMP('2024-01-01') + INTERVAL seq MINUTE + INTERVAL 0.5 SECOND
        FROM seq_1_to_10000""")
    print(f"{SHOP}: 500 customers, 10,000 orders; {REPLICA}: the same tables, empty")


def grow():
    conn = connect(SHOP)
    run(conn, f"""INSERT INTO orders ({ORDER_VALUES} NOW(6), NOW(6) FROM seq_10001_to_10250""")
    print("inserted 250 new orders")


def change():
    conn = connect(SHOP)
    run(conn,
        "UPDATE orders SET status = 'shipped', updated_at = NOW(6) WHERE id BETWEEN 1 AND 40",
        "UPDATE customers SET vip = TRUE, balance = balance + 10 WHERE id <= 5",
        "DELETE FROM orders WHERE id BETWEEN 41 AND 60",
        "DELETE FROM customers WHERE id = 500")
    print("updated 40 orders and 5 customers, deleted 20 orders and 1 customer")


def show():
    import pyarrow.dataset as ds

    folder = os.path.join(os.environ["QS_WAREHOUSE"], "shop.db", "orders")
    data = ds.dataset(folder, format="parquet", partitioning="hive")
    table = data.to_table()
    print(f"{folder}: {table.num_rows:,} rows in {len(data.files)} Parquet file(s):")
    for path in sorted(data.files):
        print(f"  {os.path.relpath(path, folder)}  {os.path.getsize(path):,} bytes")
    rows = table.sort_by("id").slice(0, 3).select(["id", "status", "price", "ordered_on", "updated_at", "dt"])
    for row in rows.to_pylist():
        print("  ", row)
    return table.num_rows


def compare():
    conn = connect()
    for table in TABLES:
        source = run(conn, f"SELECT * FROM {SHOP}.{table} ORDER BY id")
        replica = run(conn, f"SELECT * FROM {REPLICA}.{table} ORDER BY id")
        if source != replica:
            print(f"{REPLICA}.{table} differs from {SHOP}.{table}", file=sys.stderr)
            sys.exit(1)
        print(f"{REPLICA}.{table} = {SHOP}.{table}: {len(source):,} rows, every value equal")


command = sys.argv[1]
if command == "count":
    import pyarrow.dataset as ds

    folder = os.path.join(os.environ["QS_WAREHOUSE"], "shop.db", "orders")
    print(ds.dataset(folder, format="parquet", partitioning="hive").count_rows())
else:
    {"seed": seed, "grow": grow, "change": change, "show": show, "compare": compare}[command]()
PY
}

expect_rows() {
    local found
    found="$(shop count)"
    if [[ "$found" != "$1" ]]; then
        echo "quickstart: expected $1 rows in the warehouse, found $found" >&2
        exit 1
    fi
}

step "Seeding the shop database"
shop seed

step "1. Migration: quickstart_shop.orders -> Parquet (Hive layout), 2 channels, checkpoints"
"${syncx[@]}" run jobs/quickstart.yaml "${job_args[@]}" --state-dir "$state/quickstart"
shop show
expect_rows 10000

step "2. Incremental: new orders, then the same job again"
shop grow
"${syncx[@]}" run jobs/quickstart.yaml "${job_args[@]}" --state-dir "$state/quickstart"
expect_rows 10250
echo "only the 250 new orders moved: the watermark is in $state/quickstart/job-state.json"

step "3. CDC: the binlog into quickstart_replica (copy, then catch up to now)"
"${syncx[@]}" run jobs/quickstart_cdc.yaml -p "mysql_port=$port" --state-dir "$state/cdc" \
    --restore latest-or-new
shop change
"${syncx[@]}" run jobs/quickstart_cdc.yaml -p "mysql_port=$port" --state-dir "$state/cdc" \
    --restore latest-or-new
shop compare

step "Done. Next, try:"
cat <<EOF
  $shown template mysqlreader hdfswriter > my_job.yaml   # a job skeleton with every parameter
  $shown run jobs/quickstart.yaml -p mysql_port=$port -p warehouse=$warehouse -p dt=$day \\
      --state-dir $state/quickstart                       # again: nothing new, nothing moves
  $shown checkpoints list jobs/quickstart_cdc.yaml --state-dir $state/cdc
  mariadb -h 127.0.0.1 -P $port -u root quickstart_shop    # change rows, then run step 3 again:
  $shown run jobs/quickstart_cdc.yaml -p mysql_port=$port --state-dir $state/cdc --restore latest-or-new
  $shown --install-completion                             # tab completion for your shell
  scripts/quickstart.sh --stop                             # stop the quickstart's MariaDB
EOF
