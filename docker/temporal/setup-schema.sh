#!/bin/sh
# One-shot (temporalio/admin-tools image): create Temporal's two PostgreSQL databases and bring both
# schemas to the version this server release ships. Safe to re-run: it creates only what is missing
# and applies only newer schema versions, which is also how a Temporal server upgrade migrates.
#
# Environment: SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD (read by temporal-sql-tool itself).
set -eu
: "${SQL_HOST:?}" "${SQL_USER:?}" "${SQL_PASSWORD:?}"
SQL_PLUGIN=postgres12
SQL_PORT=${SQL_PORT:-5432}
export SQL_PLUGIN SQL_HOST SQL_PORT SQL_USER SQL_PASSWORD
SCHEMA_DIR=${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}

attempt=0
until nc -z "$SQL_HOST" "$SQL_PORT"; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 60 ] || { echo "PostgreSQL at $SQL_HOST:$SQL_PORT never answered" >&2; exit 1; }
    sleep 1
done

setup() {  # setup DATABASE SCHEMA
    if ! temporal-sql-tool --db "$1" create; then
        echo "database $1 was not created (it usually exists already); updating its schema"
    fi
    temporal-sql-tool --db "$1" setup-schema -v 0.0
    temporal-sql-tool --db "$1" update-schema -d "$SCHEMA_DIR/$2/versioned"
}

setup temporal temporal
setup temporal_visibility visibility
echo "Temporal schemas are up to date"
