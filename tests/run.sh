#!/usr/bin/env bash
# The whole suite on the embedded default (SQLite), then the money and tenancy
# tests again on a throwaway PostgreSQL cluster started here on a loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

run_pytest() {
  local status=0
  "$BIN/pytest" "$@" || status=$?
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
  fi
  return "$status"
}

# The architecture first: apps depend one way, the engine imports no Django, no cycles (.importlinter).
"$BIN/lint-imports" --no-cache --no-logo

# The real default model's conversion and answer are tested too (about 30 s).
ENGINE_GGUF_TESTS=${ENGINE_GGUF_TESTS:-1} run_pytest -q

if [ "${SKIP_POSTGRES:-0}" = 1 ]; then
  echo "SKIP_POSTGRES=1: PostgreSQL pass skipped"
  exit 0
fi
initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$initdb" ]; then
  echo "PostgreSQL is not installed (apt-get install postgresql), or set SKIP_POSTGRES=1" >&2
  exit 1
fi
pgbin=$(dirname "$initdb")
port=${PG_TEST_PORT:-54329}
pgdata=$(mktemp -d /tmp/pgtest.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$pgdata"
  as_pg=(runuser -u postgres --)
fi
stop_pg() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pgdata"; }
trap stop_pg EXIT
"${as_pg[@]}" "$initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdata -c max_connections=300 -c fsync=off" start >/dev/null

echo "PostgreSQL pass: money and tenancy tests on 127.0.0.1:$port"
DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres" SECRET_KEY=test-only \
  run_pytest -q -m money
