#!/usr/bin/env bash
# Set up syncx and run the quickstart job (no server needed): generated orders → Parquet files.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh all
rm -rf out/quickstart
.venv/bin/syncx run jobs/quickstart.yaml --state-dir out/quickstart-state
.venv/bin/python - <<'PY'
import pyarrow.dataset as ds

table = ds.dataset("out/quickstart", format="parquet").to_table()
print(f"out/quickstart: {table.num_rows:,} rows in {len(ds.dataset('out/quickstart').files)} Parquet file(s)")
for row in table.slice(0, 3).to_pylist():
    print(row)
PY
