#!/usr/bin/env bash
# First-start initialisation of the compose TimescaleDB (mounted into
# /docker-entrypoint-initdb.d/, run once on an empty data volume, as the admin user): creates the
# bridge's login role with least privilege — no superuser, no CREATEDB/CREATEROLE, no access
# to other databases — that may connect to $POSTGRES_DB and create (and so own) its tables
# there, and installs the timescaledb extension, which that role could not install itself.
# Re-running it is harmless (it also resets the role's password).
#   env: POSTGRES_USER, POSTGRES_DB (the image's), BRIDGE_DB_USER (default marstek_bridge),
#        BRIDGE_DB_PASSWORD (required); PGHOST/PGPORT when run outside the container.
set -euo pipefail
: "${BRIDGE_DB_PASSWORD:?set BRIDGE_DB_PASSWORD (password of the bridge role)}"
bridge_user=${BRIDGE_DB_USER:-marstek_bridge}
psql -v ON_ERROR_STOP=1 -q --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v bridge_user="$bridge_user" -v bridge_password="$BRIDGE_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
              :'bridge_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'bridge_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L CONNECTION LIMIT 20', :'bridge_user',
              :'bridge_password') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'bridge_user') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('GRANT USAGE, CREATE ON SCHEMA public TO %I', :'bridge_user') \gexec
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
echo "role $bridge_user ready in database ${POSTGRES_DB:-postgres}"
