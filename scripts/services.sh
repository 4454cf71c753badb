# shellcheck shell=bash
# PostgreSQL and Redis on 127.0.0.1 for the distributed-tuning tests (tests/tune). Source it:
#
#   source scripts/services.sh      # scripts/test.sh does this
#
# It starts a private, throw-away server of each (own data directory under /tmp, own free port,
# fsync off), exports
#
#   EMBER_TEST_POSTGRES_URL=postgresql://ember:ember@127.0.0.1:PORT/ember_test
#   EMBER_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#
# and stops both and removes their data when the sourcing shell exits (trap EXIT). Debian packages
# (postgresql, redis-server) are installed with apt-get when missing and the shell runs as root.
# PostgreSQL refuses to run as root, so as root its server runs as the `postgres` user (runuser).
# A variable that is already set is kept as it is (bring your own server) and nothing is started for it.
# When a server cannot be had, a message says why and its variable stays unset, so its tests skip —
# except under CI=true, where that is an error (the sourcing script exits).

_ember_svc_fail() {
  echo "services: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    return 1
  fi
  echo "services: the tests that need it will be skipped" >&2
  return 0
}

_ember_svc_free_port() {
  local py=python3
  command -v python3 >/dev/null 2>&1 || py=.venv/bin/python
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_ember_svc_pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

_ember_svc_install() {
  # $@: Debian packages to install. Quiet, no recommends, waits for a concurrent apt/dpkg.
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  echo "services: installing $* (apt-get)" >&2
  local log added_policy=""
  log=$(mktemp)
  # Debian starts a package's default server on install; ours run on their own ports instead.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added_policy=1
  fi
  local status=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@"
  } >"$log" 2>&1 || status=$?
  if [ -n "$added_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if [ "$status" != "0" ]; then
    tail -n 20 "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}

_ember_svc_as_pg() {
  # Run a PostgreSQL program as the postgres user when we are root (it refuses root), else as ourselves.
  if [ "$(id -u)" = "0" ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_ember_svc_start_postgres() {
  local bin port data sock
  bin=$(_ember_svc_pg_bin)
  if [ -z "$bin" ]; then
    _ember_svc_install postgresql || true
    bin=$(_ember_svc_pg_bin)
  fi
  if [ -z "$bin" ]; then
    _ember_svc_fail "PostgreSQL is not installed (apt-get install postgresql, as root)"
    return
  fi
  port=$(_ember_svc_free_port)
  # one directory the server's user owns: data, socket and log
  sock="$EMBER_SERVICES_DIR/pg"
  data="$sock/data"
  mkdir -p "$sock"
  if [ "$(id -u)" = "0" ]; then
    chown postgres: "$sock"
  fi
  if ! _ember_svc_as_pg "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --no-sync -E UTF8 >"$EMBER_SERVICES_DIR/initdb.log" 2>&1; then
    cat "$EMBER_SERVICES_DIR/initdb.log" >&2
    _ember_svc_fail "PostgreSQL initdb failed"
    return
  fi
  if ! _ember_svc_as_pg "$bin/pg_ctl" -D "$data" -l "$sock/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null; then
    cat "$sock/postgres.log" >&2
    _ember_svc_fail "PostgreSQL did not start"
    return
  fi
  EMBER_SERVICES_PG_STOP="$bin/pg_ctl"
  if ! _ember_svc_as_pg "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE ember LOGIN PASSWORD 'ember'" -c "CREATE DATABASE ember_test OWNER ember" >/dev/null; then
    _ember_svc_fail "could not create the test database in PostgreSQL"
    return
  fi
  export EMBER_TEST_POSTGRES_URL="postgresql://ember:ember@127.0.0.1:$port/ember_test"
  echo "services: PostgreSQL on 127.0.0.1:$port (EMBER_TEST_POSTGRES_URL)" >&2
}

_ember_svc_start_redis() {
  local port i
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    _ember_svc_install redis-server || true
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    _ember_svc_fail "Redis is not installed (apt-get install redis-server, as root)"
    return
  fi
  port=$(_ember_svc_free_port)
  if ! redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$EMBER_SERVICES_DIR" \
    --pidfile "$EMBER_SERVICES_DIR/redis.pid" --logfile "$EMBER_SERVICES_DIR/redis.log" \
    --save "" --appendonly no >/dev/null; then
    _ember_svc_fail "Redis did not start"
    return
  fi
  EMBER_SERVICES_REDIS_PORT=$port
  for i in $(seq 1 100); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; then
      export EMBER_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
      echo "services: Redis on 127.0.0.1:$port (EMBER_TEST_REDIS_URL)" >&2
      return
    fi
    sleep 0.1
  done
  cat "$EMBER_SERVICES_DIR/redis.log" >&2
  _ember_svc_fail "Redis did not answer on 127.0.0.1:$port"
}

ember_services_stop() {
  # Stop what ember_services_start started; safe to call twice.
  if [ -n "${EMBER_SERVICES_PG_STOP:-}" ]; then
    _ember_svc_as_pg "$EMBER_SERVICES_PG_STOP" -D "$EMBER_SERVICES_DIR/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    unset EMBER_SERVICES_PG_STOP EMBER_TEST_POSTGRES_URL
  fi
  if [ -n "${EMBER_SERVICES_REDIS_PORT:-}" ]; then
    redis-cli -h 127.0.0.1 -p "$EMBER_SERVICES_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    unset EMBER_SERVICES_REDIS_PORT EMBER_TEST_REDIS_URL
  fi
  if [ -n "${EMBER_SERVICES_DIR:-}" ]; then
    rm -rf "$EMBER_SERVICES_DIR"
    unset EMBER_SERVICES_DIR
  fi
}

ember_services_start() {
  if [ -n "${EMBER_TEST_POSTGRES_URL:-}" ] && [ -n "${EMBER_TEST_REDIS_URL:-}" ]; then
    echo "services: using the given EMBER_TEST_POSTGRES_URL and EMBER_TEST_REDIS_URL" >&2
    return 0
  fi
  EMBER_SERVICES_DIR=$(mktemp -d /tmp/ember-services.XXXXXX)
  chmod 755 "$EMBER_SERVICES_DIR"  # the postgres user must reach its data directory inside
  trap ember_services_stop EXIT
  if [ -z "${EMBER_TEST_POSTGRES_URL:-}" ]; then
    _ember_svc_start_postgres || return 1
  fi
  if [ -z "${EMBER_TEST_REDIS_URL:-}" ]; then
    _ember_svc_start_redis || return 1
  fi
}

ember_services_start
