"""Private test servers (MariaDB, ...) used by the syncx test-suite and benchmarks."""
