#!/usr/bin/env bash
# Three sessionhub nodes behind a local nginx, on one machine, without containers: the same
# cluster as deploy/compose.yaml, for trying it out (`make cluster`).
#
#   deploy/cluster.sh start     start the nodes and nginx, print the URL and a sign-in link
#   deploy/cluster.sh status    each node's /api/health
#   deploy/cluster.sh stop      stop what `start` started (only the processes it recorded)
#
# Environment (defaults in brackets):
#   SESSIONHUB_DATABASE_URL  [postgresql+asyncpg://postgres@127.0.0.1:5432/sessionhub_cluster]
#                            the database is created if it does not exist
#   SESSIONHUB_BROKER_URL    [redis://127.0.0.1:6379/0]
#   CLUSTER_DIR              [./.cluster]  data dirs, logs, pids, the secret, nginx's files
#   CLUSTER_PORT             [8080]        nginx, the one URL users need
#   CLUSTER_NODE_PORTS       ["8101 8102 8103"]  one sessionhub node per port
#   CLUSTER_HOST             [127.0.0.1]   the address nginx listens on
#   SESSIONHUB               [.venv/bin/sessionhub, else sessionhub on PATH]
#   NGINX                    [nginx]       Debian: apt-get install nginx
# Any other SESSIONHUB_* variable is passed to every node (SESSIONHUB_PING_INTERVAL, ...).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

DATABASE_URL=${SESSIONHUB_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/sessionhub_cluster}
BROKER_URL=${SESSIONHUB_BROKER_URL:-redis://127.0.0.1:6379/0}
DIR=${CLUSTER_DIR:-$PWD/.cluster}
PORT=${CLUSTER_PORT:-8080}
HOST=${CLUSTER_HOST:-127.0.0.1}
read -r -a NODE_PORTS <<<"${CLUSTER_NODE_PORTS:-8101 8102 8103}"
NGINX=${NGINX:-nginx}
if [[ -n ${SESSIONHUB:-} ]]; then
    :
elif [[ -x $root/.venv/bin/sessionhub ]]; then
    SESSIONHUB=$root/.venv/bin/sessionhub
else
    SESSIONHUB=$(command -v sessionhub || true)
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# `stop` and `status` find what `start` chose (ports) without being told again.
if [[ ${1:-start} != start && -f $DIR/cluster.env ]]; then
    # shellcheck source=/dev/null
    source "$DIR/cluster.env"
    read -r -a NODE_PORTS <<<"$CLUSTER_NODE_PORTS"
fi
URL="http://$HOST:$PORT"
# How to address this cluster again (the directory, when it is not the default one).
if [[ $DIR == "$PWD/.cluster" ]]; then SELF="$0"; else SELF="CLUSTER_DIR=$DIR $0"; fi

die() {
    echo "cluster: $*" >&2
    exit 1
}

# The Python that runs sessionhub (it has asyncpg and redis when sessionhub[postgres,redis]
# is installed): used for the few checks below, so nothing else needs installing.
python_of_sessionhub() {
    local head
    head=$(head -n1 "$SESSIONHUB")
    if [[ $head == "#!"*python* ]]; then
        echo "${head#\#!}"
    else
        command -v python3
    fi
}

# Is the process in pid file $1 alive and one of ours ($2: a word its command line holds)?
# Checked so that a stale pid file never makes us signal an unrelated process.
alive() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

stop_pidfile() { # pid file, word in the command line
    local pid
    if alive "$1" "$2"; then
        pid=$(cat "$1")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do # up to 10 s: open streams get 3 s to close
            alive "$1" "$2" || break
            sleep 0.1
        done
        if alive "$1" "$2"; then
            echo "  pid $pid did not stop in 10 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$1"
}

cmd_stop() {
    stop_pidfile "$DIR/nginx/nginx.pid" nginx
    local f
    for f in "$DIR"/node-*.pid; do
        [[ -e $f ]] && stop_pidfile "$f" sessionhub
    done
    echo "cluster stopped (data, logs and the secret stay in $DIR)"
}

cmd_status() {
    local i port
    for i in "${!NODE_PORTS[@]}"; do
        port=${NODE_PORTS[$i]}
        printf 'node-%d  http://127.0.0.1:%s  ' "$((i + 1))" "$port"
        curl -fsS --max-time 2 "http://127.0.0.1:$port/api/health" || printf 'not answering'
        echo
    done
    printf 'nginx   %s  ' "$URL"
    curl -fsS --max-time 2 -o /dev/null -w '%{http_code}\n' "$URL/api/ready" || echo 'not answering'
}

wait_ready() { # url, seconds, log file
    local end=$((SECONDS + $2))
    until curl -fsS --max-time 1 -o /dev/null "$1/api/ready" 2>/dev/null; do
        if ((SECONDS > end)); then
            echo "cluster: $1 not ready after $2 s; the end of $3:" >&2
            tail -n 30 "$3" >&2 || true
            cmd_stop >&2
            exit 1
        fi
        sleep 0.2
    done
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_start() {
    [[ -n $SESSIONHUB && -x $SESSIONHUB ]] ||
        die "sessionhub not found: run \`make\` targets from the repository (they create .venv), or set SESSIONHUB"
    command -v "$NGINX" >/dev/null || die "nginx not found: apt-get install nginx (or set NGINX)"
    command -v curl >/dev/null || die "curl not found: apt-get install curl"
    local f
    for f in "$DIR"/node-*.pid "$DIR/nginx/nginx.pid"; do
        alive "$f" "sessionhub\|nginx" && die "already running: $SELF stop first"
    done
    for p in "$PORT" "${NODE_PORTS[@]}"; do
        port_free "$p" || die "port $p is in use (set CLUSTER_PORT / CLUSTER_NODE_PORTS)"
    done
    local py
    py=$(python_of_sessionhub)

    # One signing secret for every node, kept across restarts.
    if [[ ! -s $DIR/jwt-secret ]]; then
        (umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(32))' >"$DIR/jwt-secret")
    fi
    local secret
    secret=$(cat "$DIR/jwt-secret")

    if [[ $DATABASE_URL == postgresql* ]]; then
        echo "database: $(sed -E 's#//([^:/@]+):[^@]*@#//\1:***@#' <<<"$DATABASE_URL")"
        "$py" - "$DATABASE_URL" <<'PY' || die "cannot reach or create the database (is PostgreSQL running?)"
# Creates the cluster's database when it does not exist yet (CREATE DATABASE cannot run in
# a transaction, hence autocommit on the server's maintenance database).
import asyncio, sys
import asyncpg
from sqlalchemy.engine import make_url

url = make_url(sys.argv[1])
name = url.database

async def main() -> None:
    admin = url.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
    finally:
        await conn.close()

asyncio.run(main())
PY
    fi
    echo "broker:   $BROKER_URL"
    "$py" - "$BROKER_URL" <<'PY' || die "Redis at $BROKER_URL does not answer"
import sys
import redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3, socket_timeout=3).ping()
PY

    printf 'PORT=%q\nHOST=%q\nCLUSTER_NODE_PORTS=%q\n' "$PORT" "$HOST" "${NODE_PORTS[*]}" \
        >"$DIR/cluster.env"
    export SESSIONHUB_DATABASE_URL=$DATABASE_URL SESSIONHUB_BROKER_URL=$BROKER_URL
    export SESSIONHUB_JWT_SECRET=$secret SESSIONHUB_PUBLIC_URL=$URL
    # Migrate once before the nodes start (they would also agree among themselves, under
    # an advisory lock; this way a bad URL is one clear line).
    "$SESSIONHUB" migrate >"$DIR/migrate.log" 2>&1 || {
        cat "$DIR/migrate.log" >&2
        die "migration failed"
    }

    local i servers="" port log
    for i in "${!NODE_PORTS[@]}"; do
        port=${NODE_PORTS[$i]}
        log=$DIR/node-$((i + 1)).log
        mkdir -p "$DIR/node-$((i + 1))"
        SESSIONHUB_NODE_ID=node-$((i + 1)) SESSIONHUB_DATA_DIR=$DIR/node-$((i + 1)) \
            nohup "$SESSIONHUB" serve --host 127.0.0.1 --port "$port" >"$log" 2>&1 </dev/null &
        echo $! >"$DIR/node-$((i + 1)).pid"
        servers+="        server 127.0.0.1:$port max_fails=1 fail_timeout=2s;"$'\n'
    done
    for i in "${!NODE_PORTS[@]}"; do
        wait_ready "http://127.0.0.1:${NODE_PORTS[$i]}" 60 "$DIR/node-$((i + 1)).log"
    done

    mkdir -p "$DIR/nginx/tmp"
    local conf=$DIR/nginx/nginx.conf
    # The template's placeholders; the server lines are many, so they go through a file.
    printf '%s' "$servers" >"$DIR/nginx/servers.conf"
    sed -e "s|@PREFIX@|$DIR/nginx|g" -e "s|@DEPLOY@|$here|g" \
        -e "s|@USER@|$(id -un) $(id -gn)|g" -e "s|@LISTEN@|$HOST:$PORT|g" \
        -e "/^@SERVERS@$/{r $DIR/nginx/servers.conf" -e "d}" \
        "$here/nginx/local.conf.template" >"$conf"
    "$NGINX" -t -q -p "$DIR/nginx" -c "$conf" -g 'daemon off;' 2>"$DIR/nginx/check.log" || {
        cat "$DIR/nginx/check.log" >&2
        cmd_stop >&2
        die "nginx refused its configuration ($conf)"
    }
    nohup "$NGINX" -p "$DIR/nginx" -c "$conf" -g 'daemon off;' >"$DIR/nginx/nginx.log" 2>&1 </dev/null &
    wait_ready "$URL" 15 "$DIR/nginx/error.log"

    local token
    token=$("$SESSIONHUB" token create --user admin --role admin --ttl 24h)
    cat <<EOF

sessionhub cluster: ${#NODE_PORTS[@]} nodes behind nginx
  URL:      $URL   (API docs: $URL/docs)
  sign in:  $URL/?token=$token
            (an admin token valid 24 h; more: SESSIONHUB_JWT_SECRET=\$(cat $DIR/jwt-secret) $SESSIONHUB token create --user NAME)
  nodes:    $(for p in "${NODE_PORTS[@]}"; do printf 'http://127.0.0.1:%s ' "$p"; done)
  logs:     $DIR/node-*.log, $DIR/nginx/error.log
  watch:    $SELF status   (each node's /api/health; /metrics: sessionhub_leader)
  stop:     $SELF stop
EOF
}

case "${1:-start}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
