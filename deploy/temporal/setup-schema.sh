#!/bin/sh
# One-shot (temporalio/admin-tools): create Temporal's two PostgreSQL databases and bring
# their schemas up to date. Safe to run on every `docker compose up`.
set -eu

: "${POSTGRES_SEEDS:=postgresql}"
: "${DB_PORT:=5432}"
: "${POSTGRES_USER:?}"
: "${SQL_PASSWORD:?}"
SCHEMA=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at ${POSTGRES_SEEDS}:${DB_PORT}"
until nc -z "${POSTGRES_SEEDS}" "${DB_PORT}"; do sleep 1; done

sql() {
    temporal-sql-tool --plugin postgres12 --ep "${POSTGRES_SEEDS}" -p "${DB_PORT}" -u "${POSTGRES_USER}" "$@"
}

for db in temporal temporal_visibility; do
    # `create` fails when the database exists; the schema steps below are idempotent.
    sql --db "${db}" create || echo "database ${db} exists"
done
sql --db temporal setup-schema -v 0.0
sql --db temporal update-schema -d "${SCHEMA}/temporal/versioned"
sql --db temporal_visibility setup-schema -v 0.0
sql --db temporal_visibility update-schema -d "${SCHEMA}/visibility/versioned"
echo "Temporal schema is up to date"
