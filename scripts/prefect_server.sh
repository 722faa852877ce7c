#!/usr/bin/env bash
# A local Prefect server for cxloop: `make server` / `make server-stop`.
#
#   scripts/prefect_server.sh start   server on 127.0.0.1 (SQLite under $CXLOOP_HOME/.prefect), work pool,
#                                     DuckDB-writer limit, `prefect deploy --all`, one worker
#   scripts/prefect_server.sh stop    stops the worker and the server this script started
#
# Settings (environment): CXLOOP_HOME (default data/), CXLOOP_SERVER_PORT (4200), CXLOOP_WORK_POOL
# (cxloop), CXLOOP_BIN (the virtual environment's bin/, default .venv/bin). Prefect's state is SQLite in
# $CXLOOP_HOME/.prefect/server.db; for PostgreSQL export PREFECT_SERVER_DATABASE_CONNECTION_URL before `start`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export CXLOOP_HOME="${CXLOOP_HOME:-$ROOT/data}"
mkdir -p "$CXLOOP_HOME"
export CXLOOP_HOME="$(cd "$CXLOOP_HOME" && pwd)"
export PREFECT_HOME="${PREFECT_HOME:-$CXLOOP_HOME/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# the server's own SQLite file, apart from the one the CLI's ephemeral API uses (prefect.db), so the two never
# contend for it; PostgreSQL: export PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://… first
export PREFECT_SERVER_DATABASE_CONNECTION_URL="${PREFECT_SERVER_DATABASE_CONNECTION_URL:-sqlite+aiosqlite:///$PREFECT_HOME/server.db}"
export PREFECT_CLI_PROMPT=false
BIN="${CXLOOP_BIN:-$ROOT/.venv/bin}"
PORT="${CXLOOP_SERVER_PORT:-4200}"
POOL="${CXLOOP_WORK_POOL:-cxloop}"
LIMIT=duckdb-writer
URL="http://127.0.0.1:$PORT"
RUN="$PREFECT_HOME/run"
mkdir -p "$RUN"

say() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# stop NAME SECONDS: SIGTERM to the process group we started, a second SIGTERM (a Prefect worker
# ignores the first one while it waits), then SIGKILL if it is still there.
stop_one() {
    local name=$1 pid
    alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
    pid=$(cat "$RUN/$name.pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for i in $(seq 1 "$2"); do
        kill -0 "$pid" 2>/dev/null || break
        [[ $i -eq 3 ]] && kill -TERM -- "-$pid" 2>/dev/null || true
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    rm -f "$RUN/$name.pid"
    say "stopped $name (pid $pid)"
}

healthy() { "$BIN/python" - "$URL/api/health" <<'EOF'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

start() {
    [[ -x "$BIN/prefect" ]] || fail "$BIN/prefect not found: run \`make install\` first (or set CXLOOP_BIN)"
    if alive server; then
        say "the Prefect server is already running ($URL, pid $(cat "$RUN/server.pid"))"
    else
        if healthy; then fail "port $PORT already answers as a Prefect server that this script did not start; set CXLOOP_SERVER_PORT"; fi
        say "starting the Prefect server on $URL (state in $PREFECT_HOME) …"
        setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$RUN/server.log" 2>&1 < /dev/null &
        echo $! >"$RUN/server.pid"
        for _ in $(seq 1 120); do
            healthy && break
            alive server || fail "the server stopped while starting; see $RUN/server.log"
            sleep 1
        done
        healthy || { stop_one server 10; fail "the server did not answer within 120 s; see $RUN/server.log"; }
    fi
    export PREFECT_API_URL="$URL/api"

    "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1 \
        || "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
    "$BIN/prefect" gcl inspect "$LIMIT" >/dev/null 2>&1 \
        || "$BIN/prefect" gcl create "$LIMIT" --limit 1 >/dev/null
    say "work pool '$POOL' and concurrency limit '$LIMIT' (1 writer) are in place"

    "$BIN/prefect" --no-prompt deploy --all >"$RUN/deploy.log" 2>&1 \
        || { cat "$RUN/deploy.log" >&2; fail "prefect deploy failed (log above, also in $RUN/deploy.log)"; }
    say "deployed: cx_loop_scheduled/hourly, train_scheduled/weekly, report_scheduled/daily"

    if alive worker; then
        say "the worker is already running (pid $(cat "$RUN/worker.pid"))"
    else
        setsid "$BIN/prefect" worker start --pool "$POOL" --type process >"$RUN/worker.log" 2>&1 < /dev/null &
        echo $! >"$RUN/worker.pid"
        say "started a worker on pool '$POOL' (log: $RUN/worker.log)"
    fi
    cat <<EOF

Prefect UI:   $URL
Use it from this shell:   export PREFECT_API_URL=$URL/api
Run the main job now:     $BIN/prefect deployment run cx_loop_scheduled/hourly
Warehouse:                $CXLOOP_HOME/cx.duckdb     report: $CXLOOP_HOME/report.html
Stop:                     make server-stop
EOF
}

case "${1:-}" in
    start) start ;;
    stop) stop_one worker 15; stop_one server 20 ;;
    status)
        for n in server worker; do
            if alive $n; then say "$n: running (pid $(cat "$RUN/$n.pid"))"; else say "$n: stopped"; fi
        done ;;
    *) fail "usage: $0 start|stop|status" ;;
esac
