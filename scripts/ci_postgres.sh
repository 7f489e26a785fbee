#!/usr/bin/env bash
# A local PostgreSQL 15 cluster for the service tests (the PostgreSQL params of
# tests/service/). Idempotent: installs the server with apt when missing, creates
# the cluster, role and database once, starts the cluster when stopped.
#
# Usage (as root on Debian 12, e.g. from .ci/run):
#     eval "$(bash scripts/ci_postgres.sh)"     # exports FELIX_TEST_POSTGRES_URL
#     source scripts/ci_postgres.sh             # the same, in the current shell
#
# stdout carries only the `export FELIX_TEST_POSTGRES_URL=...` line; progress goes to stderr.
# Settings (environment): FELIX_PG_VERSION (15), FELIX_PG_CLUSTER (felix_test),
# FELIX_PG_PORT (54329), FELIX_PG_USER (felix), FELIX_PG_PASSWORD (felix), FELIX_PG_DB (felix_test).

_felix_pg_main() {
    set -euo pipefail
    local version="${FELIX_PG_VERSION:-15}"
    local cluster="${FELIX_PG_CLUSTER:-felix_test}"
    local port="${FELIX_PG_PORT:-54329}"
    local user="${FELIX_PG_USER:-felix}"
    local password="${FELIX_PG_PASSWORD:-felix}"
    local db="${FELIX_PG_DB:-felix_test}"
    local bindir="/usr/lib/postgresql/${version}/bin"

    log() { printf '[ci_postgres] %s\n' "$*" >&2; }

    if [ ! -x "${bindir}/postgres" ] || ! command -v pg_createcluster >/dev/null 2>&1; then
        if [ "$(id -u)" != "0" ]; then
            log "PostgreSQL ${version} server is not installed and this is not root: run 'apt-get install -y postgresql-${version}' first"
            return 1
        fi
        log "installing postgresql-${version} with apt"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq "postgresql-${version}" >&2
    fi

    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "${version} ${cluster}"; then
        log "creating cluster ${version}/${cluster} on port ${port}"
        pg_createcluster "${version}" "${cluster}" -p "${port}" -- --auth-local=peer --auth-host=scram-sha-256 >&2
    fi
    if ! pg_lsclusters -h | awk -v v="${version}" -v c="${cluster}" '$1==v && $2==c {print $4}' | grep -q online; then
        log "starting cluster ${version}/${cluster}"
        pg_ctlcluster "${version}" "${cluster}" start >&2
    fi
    # the port the cluster actually listens on (an existing cluster keeps its own)
    port="$(pg_lsclusters -h | awk -v v="${version}" -v c="${cluster}" '$1==v && $2==c {print $3}')"

    local i
    for i in $(seq 1 50); do
        if runuser -u postgres -- psql -p "${port}" -Atqc 'select 1' >/dev/null 2>&1; then
            break
        fi
        sleep 0.2
    done

    psql_admin() { runuser -u postgres -- psql -p "${port}" -v ON_ERROR_STOP=1 -Atq "$@"; }
    if [ "$(psql_admin -c "select 1 from pg_roles where rolname='${user}'")" != "1" ]; then
        log "creating role ${user}"
        psql_admin -c "create role \"${user}\" login password '${password}'"
    else
        psql_admin -c "alter role \"${user}\" login password '${password}'"
    fi
    if [ "$(psql_admin -c "select 1 from pg_database where datname='${db}'")" != "1" ]; then
        log "creating database ${db}"
        psql_admin -c "create database \"${db}\" owner \"${user}\""
    fi

    if ! python3 -c "import psycopg" >/dev/null 2>&1; then
        log "installing the PostgreSQL driver (psycopg 3) with pip"
        python3 -m pip install -q "psycopg[binary]>=3.2" >&2
    fi

    FELIX_TEST_POSTGRES_URL="postgresql+psycopg://${user}:${password}@127.0.0.1:${port}/${db}"
    export FELIX_TEST_POSTGRES_URL
    log "ready: ${FELIX_TEST_POSTGRES_URL}"
    printf 'export FELIX_TEST_POSTGRES_URL=%q\n' "${FELIX_TEST_POSTGRES_URL}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _felix_pg_main "$@"
else
    # sourced: keep the caller's shell options, export into it
    _felix_pg_out="$( _felix_pg_main "$@" )" && eval "${_felix_pg_out}"
    unset _felix_pg_out
fi
