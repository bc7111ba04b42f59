#!/usr/bin/env bash
# The scaled-out topology on this one machine, in the background (`make up`, `make down`, `make status`):
#
#   PostgreSQL  initdb into $DATA_DIR/postgres on first use, on 127.0.0.1:$PG_PORT (not the system service)
#   Redis       redis-server on 127.0.0.1:$REDIS_PORT, data in $DATA_DIR/redis
#   release     platform/Procfile's release line: migrations, the default model (offline)
#   and platform/Procfile under honcho:
#   web         $WEB_REPLICAS replicas behind http://$HOST:$PORT (SO_REUSEPORT), each also on its own port
#               ($PORT+1 ...) for its /metrics
#   worker-cpu  $WORKERS inference workers, metrics on $PORT+101 ...
#   worker      a Celery worker, and exactly one Celery beat (schedule: $DATA_DIR/celerybeat-schedule)
#
# Every process gets DATABASE_URL, REDIS_URL, INFERENCE_QUEUE_URL and SECRET_KEY (generated once into
# $DATA_DIR/secret_key, the file the embedded default uses) from the env file $DATA_DIR/up/env. `up` returns
# once every replica's /readyz answers 200 and prints the URL and a new API key; `down` stops everything it
# started, PostgreSQL and Redis included. Logs: $DATA_DIR/up/*.log, $DATA_DIR/postgres/server.log.
#
# Usage: platform/topology.sh up|down|status (from the Makefile, which passes the variables below).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.venv/bin

DATA_DIR=${DATA_DIR:-var}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
WEB_REPLICAS=${WEB_REPLICAS:-2}
WORKERS=${WORKERS:-1}
PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}
UP_TIMEOUT=${UP_TIMEOUT:-600}
STARTED=$(date +%s)

say() { echo "==> $*"; }
done_in() { echo "    done in $(( $(date +%s) - $1 )) s"; }
die() { echo "topology: $*" >&2; exit 1; }


DATA_DIR=$(realpath -m "$DATA_DIR")  # absolute: PostgreSQL and Redis run in other directories
RUN=$DATA_DIR/up
STATE=$RUN/state  # what `down` needs of the running topology: its ports, its marker, honcho's pid
PGDATA=$DATA_DIR/postgres

as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)  # PostgreSQL refuses to run as root
fi

pg_bin() {
  local initdb
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$initdb" ] || initdb=$(command -v initdb || true)
  [ -n "$initdb" ] || die "PostgreSQL's server binaries are missing (apt-get install postgresql)"
  dirname "$initdb"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# The processes of one run, for `down` to find any that outlived the orderly stops: honcho and all it starts
# carry PLATFORM_UP_RUN=<the run's marker> in their environment; PostgreSQL and Redis write their process
# titles over theirs, and are known by their program and working directory instead.
marked() {
  local marker=$1 env pid
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}; pid=${pid%/environ}
    [ "$pid" = $$ ] && continue
    if grep -qzx "PLATFORM_UP_RUN=$marker" "$env" 2>/dev/null; then
      echo "$pid"
      continue
    fi
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null):$(readlink "/proc/$pid/exe" 2>/dev/null)" in
      "$PGDATA:"*/postgres | "$DATA_DIR/redis:"*/redis-*) echo "$pid" ;;
    esac
  done
  return 0
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

with_env() { (set -a; . "$RUN/env"; set +a; exec "$@"); }

ready_wait() {
  # Every replica's /readyz (each on its own port) and the shared port's answer 200; honcho must stay up.
  "$BIN/python" - "$HOST" "$PORT" "$WEB_REPLICAS" "$UP_TIMEOUT" "$1" <<'EOF'
import json, os, sys, time, urllib.error, urllib.request

host, port, replicas, timeout, honcho = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
urls = [f"http://{host}:{port}/readyz"] + [f"http://{host}:{port + i}/readyz" for i in range(1, replicas + 1)]
deadline, said, last = time.monotonic() + timeout, 0.0, ""

def state(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return "ok"
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
            return f"{body.get('status')}: " + ", ".join(f"{k} {body['checks'][k]}" for k in body.get("failed", []))
        except Exception:
            return f"HTTP {exc.code}"
    except OSError:
        return "not answering yet"

while True:
    try:
        with open(f"/proc/{honcho}/stat") as stat:
            stopped = stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        stopped = True
    if stopped:
        sys.exit("the processes stopped before they were ready")
    states = [state(url) for url in urls]
    if all(s == "ok" for s in states):
        sys.exit(0)
    now = time.monotonic()
    if now > deadline:
        sys.exit(f"not ready after {timeout:.0f} s: " + "; ".join(f"{u}: {s}" for u, s in zip(urls, states)))
    waiting = "; ".join(sorted({s for s in states if s != "ok"}))
    if now - said > 15 or waiting != last:
        print(f"    waiting for /readyz: {waiting}", flush=True)
        said, last = now, waiting
    time.sleep(1)
EOF
}

start_postgres() {
  local pgbin=$1 t=$(date +%s)
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    say "Creating the PostgreSQL cluster in $PGDATA (first use)"
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    if [ ${#as_pg[@]} -gt 0 ]; then
      chown postgres "$PGDATA"
      "${as_pg[@]}" test -x "$PGDATA" \
        || die "the postgres user cannot reach $PGDATA: make its parent folders searchable (chmod o+x), or set DATA_DIR"
    fi
    # Superuser 'postgres' over the cluster's own socket (a folder only its owner enters); the platform's role
    # connects over TCP with a password.
    "${as_pg[@]}" "$pgbin/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 \
      >"$RUN/initdb.log" 2>&1 || { cat "$RUN/initdb.log" >&2; die "initdb failed"; }
    local sockets=$PGDATA
    [ ${#sockets} -lt 90 ] || sockets=/tmp  # a Unix socket's path has at most 107 bytes
    cat >>"$PGDATA/postgresql.conf" <<EOF
# platform/topology.sh (make up): loopback only; the port is given at each start.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockets'
EOF
  fi
  say "Starting PostgreSQL on 127.0.0.1:$PG_PORT"
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-p $PG_PORT" start >/dev/null || { tail -n 20 "$PGDATA/server.log" >&2; die "PostgreSQL did not start"; }
  local sockets
  sockets=$(sed -n "s/^unix_socket_directories = '\(.*\)'$/\1/p" "$PGDATA/postgresql.conf" | tail -n 1)
  # The platform's role and database, made once; the role's password (generated once) set at every start.
  [ -s "$DATA_DIR/db_password" ] || (umask 077; "$BIN/python" -c 'import secrets; print(secrets.token_hex(24))' >"$DATA_DIR/db_password")
  local password
  password=$(cat "$DATA_DIR/db_password")
  sql() { "${as_pg[@]}" "$pgbin/psql" -h "$sockets" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA -c "$1"; }
  [ "$(sql "SELECT 1 FROM pg_roles WHERE rolname = 'platform'")" = 1 ] || sql "CREATE ROLE platform LOGIN"
  sql "ALTER ROLE platform PASSWORD '$password'" >/dev/null
  [ "$(sql "SELECT 1 FROM pg_database WHERE datname = 'platform'")" = 1 ] || sql "CREATE DATABASE platform OWNER platform"
  DATABASE_URL="postgresql://platform:$password@127.0.0.1:$PG_PORT/platform"
  done_in "$t"
}

start_redis() {
  local t=$(date +%s)
  say "Starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$DATA_DIR/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA_DIR/redis" \
    --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" >/dev/null
  local i
  for i in $(seq 100); do
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && { done_in "$t"; return; }
    sleep 0.1
  done
  tail -n 20 "$RUN/redis.log" >&2
  die "Redis did not answer on 127.0.0.1:$REDIS_PORT"
}

write_env() {
  [ -s "$DATA_DIR/secret_key" ] || (umask 077; "$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$DATA_DIR/secret_key")
  local redis_url="redis://127.0.0.1:$REDIS_PORT/0"
  (umask 077; cat >"$RUN/env" <<EOF
# Written by platform/topology.sh at each make up: the settings of every process of the local topology.
DATA_DIR=$DATA_DIR
DATABASE_URL=$DATABASE_URL
REDIS_URL=$redis_url
INFERENCE_QUEUE_URL=$redis_url
SECRET_KEY=$(cat "$DATA_DIR/secret_key")
SITE_URL=http://$URL_HOST:$PORT
ALLOWED_HOSTS=127.0.0.1,localhost,[::1],$URL_HOST
HF_HUB_OFFLINE=1
WEB_HOST=$HOST
WEB_SHARED_PORT=$PORT
WORKER_METRICS_ADDR=127.0.0.1
# Plain http on this machine (the HTTPS-only defaults of a DATABASE_URL deployment would redirect it).
SECURE_SSL_REDIRECT=0
SESSION_COOKIE_SECURE=0
CSRF_COOKIE_SECURE=0
SECURE_HSTS_SECONDS=0
EOF
  )
}

up() {
  mkdir -p "$DATA_DIR" "$RUN"
  if [ -f "$STATE" ]; then
    # shellcheck disable=SC1090
    . "$STATE"
    if alive "${HONCHO_PID:-}"; then
      say "Already running (make down stops it)"
      PORT=$UP_PORT; HOST=$UP_HOST
      URL_HOST=$HOST; [ "$HOST" != 0.0.0.0 ] || URL_HOST=127.0.0.1
      with_env "$BIN/python" manage.py demokey --url "http://$URL_HOST:$PORT"
      return
    fi
    say "Clearing what a previous run left behind"
    down
  fi
  [[ "$WEB_REPLICAS" =~ ^[1-9][0-9]*$ ]] || die "WEB_REPLICAS must be a positive number"
  [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "WORKERS must be a positive number"
  [ "$WEB_REPLICAS" -lt 100 ] && [ "$WORKERS" -lt 100 ] || die "at most 99 web replicas and 99 workers"
  command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
  local pgbin p
  pgbin=$(pg_bin)
  local ports=("$PORT" "$PG_PORT" "$REDIS_PORT")
  for p in $(seq "$WEB_REPLICAS"); do ports+=($((PORT + p))); done
  for p in $(seq "$WORKERS"); do ports+=($((PORT + 100 + p))); done
  for p in "${ports[@]}"; do
    ! port_busy "$p" || die "port $p is in use (PORT=$PORT uses $PORT, its next $WEB_REPLICAS and $((PORT + 101)) on; PG_PORT=$PG_PORT, REDIS_PORT=$REDIS_PORT)"
  done
  URL_HOST=$HOST; [ "$HOST" != 0.0.0.0 ] || URL_HOST=127.0.0.1
  MARKER=$("$BIN/python" -c 'import secrets; print(secrets.token_hex(8))')
  cat >"$STATE" <<EOF
MARKER=$MARKER
UP_HOST=$HOST
UP_PORT=$PORT
UP_PG_PORT=$PG_PORT
UP_REDIS_PORT=$REDIS_PORT
EOF

  start_postgres "$pgbin"
  start_redis
  write_env

  local t=$(date +%s)
  say "Migrating and preparing the default model (platform/Procfile's release)"
  "$BIN/honcho" -f platform/Procfile -e "$RUN/env" start --no-colour release >"$RUN/release.log" 2>&1 \
    || { tail -n 30 "$RUN/release.log" >&2; down >&2; die "the release step failed (log: $RUN/release.log)"; }
  done_in "$t"

  t=$(date +%s)
  say "Starting $WEB_REPLICAS web replicas, $WORKERS inference worker(s), a Celery worker and one beat (honcho)"
  PLATFORM_UP_RUN=$MARKER setsid "$BIN/honcho" -f platform/Procfile -e "$RUN/env" start --no-colour \
    -p $((PORT + 1)) -c "web=$WEB_REPLICAS,worker-cpu=$WORKERS" web worker-cpu worker beat \
    </dev/null >"$RUN/honcho.log" 2>&1 &
  echo "HONCHO_PID=$!" >>"$STATE"
  if ! ready_wait "$!"; then
    echo "The inference workers' last lines:" >&2  # the usual cause: a worker still loading or compiling
    grep -E '^[0-9:]+ worker-cpu' "$RUN/honcho.log" | grep -v 'Loading weights' | tail -n 20 >&2 || true
    echo "The last lines of all:" >&2
    tail -n 20 "$RUN/honcho.log" >&2
    down >&2
    die "the topology did not become ready (log: $RUN/honcho.log)"
  fi
  done_in "$t"
  echo
  echo "Ready in $(( $(date +%s) - STARTED )) s: http://$URL_HOST:$PORT ($WEB_REPLICAS web replicas; each one's own port" \
       "$((PORT + 1))-$((PORT + WEB_REPLICAS)); workers' metrics on $((PORT + 101))-$((PORT + 100 + WORKERS)))"
  echo "OpenAI base URL: http://$URL_HOST:$PORT/v1"
  with_env "$BIN/python" manage.py demokey --url "http://$URL_HOST:$PORT"
  echo
  echo "Logs: $RUN/honcho.log   Stop it all: make down"
}

down() {
  if [ ! -f "$STATE" ]; then
    say "Nothing is running from $DATA_DIR"
    return
  fi
  # shellcheck disable=SC1090
  . "$STATE"
  local t=$(date +%s) i
  if alive "${HONCHO_PID:-}"; then
    say "Stopping the web replicas, workers, Celery and beat"
    # honcho sends SIGTERM to each process group and SIGKILL to those still there 5 s later.
    kill -TERM "$HONCHO_PID" 2>/dev/null || true
    for i in $(seq 300); do alive "$HONCHO_PID" || break; sleep 0.1; done
    alive "$HONCHO_PID" && kill -KILL "$HONCHO_PID" 2>/dev/null || true
  fi
  if [ -f "$PGDATA/postmaster.pid" ]; then
    say "Stopping PostgreSQL"
    "${as_pg[@]}" "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
      || "${as_pg[@]}" "$(pg_bin)/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$RUN/redis.pid" ]; then
    local redis_pid
    redis_pid=$(cat "$RUN/redis.pid")
    if alive "$redis_pid"; then
      say "Stopping Redis"
      kill -TERM "$redis_pid" 2>/dev/null || true  # it saves its data, then exits
      for i in $(seq 300); do alive "$redis_pid" || break; sleep 0.1; done
      if alive "$redis_pid"; then  # it stays up when it cannot save: see $RUN/redis.log
        echo "    Redis did not stop (it could not save its data? $RUN/redis.log): killing it" >&2
        kill -KILL "$redis_pid" 2>/dev/null || true
      fi
    fi
    rm -f "$RUN/redis.pid"
  fi
  # Whatever outlived the orderly stops (a process whose manager died): SIGTERM, then SIGKILL.
  local left
  left=$(marked "$MARKER")
  if [ -n "$left" ]; then
    echo "    stopping what was left: $(echo $left)"
    kill -TERM $left 2>/dev/null || true
    for i in $(seq 100); do left=$(marked "$MARKER"); [ -n "$left" ] || break; sleep 0.1; done
    [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
  fi
  rm -f "$STATE"
  done_in "$t"
}

status() {
  if [ ! -f "$STATE" ]; then
    echo "Not running from $DATA_DIR"
    return 1
  fi
  # shellcheck disable=SC1090
  . "$STATE"
  alive "${HONCHO_PID:-}" && echo "Running: http://$UP_HOST:$UP_PORT (honcho pid $HONCHO_PID; log $RUN/honcho.log)" \
    || echo "Stopped uncleanly: make down clears it"
  ps -o pid=,args= -p "$(marked "$MARKER" | paste -sd, -)" 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: platform/topology.sh up|down|status" ;;
esac
