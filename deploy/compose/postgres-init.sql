-- The roles of the docker-compose.yml stack, created once, when its PostgreSQL data folder is new
-- (the postgres image runs /docker-entrypoint-initdb.d/*.sql as the superuser, in database edc).
-- The same split as in production (README, "Least privilege"):
--   edc_owner    owns the database and its schema, runs the migrations (service `migrate`,
--                postgres.migrate_url);
--   edc_runtime  the group role (NOLOGIN) the migrations grant the daemon's privileges to
--                (postgres.runtime_role, its default name);
--   edc_app      what the daemons log in as (postgres.url): a member of edc_runtime, owning
--                nothing, so it can store records through the owner's functions but neither
--                change the schema nor rewrite the evidence.
-- Passwords are the role names: this stack is for trying edc-ingest out on one machine, and its
-- PostgreSQL port is not published.
CREATE ROLE edc_owner LOGIN PASSWORD 'edc_owner';
CREATE ROLE edc_runtime NOLOGIN;
CREATE ROLE edc_app LOGIN PASSWORD 'edc_app' IN ROLE edc_runtime;
-- Since PostgreSQL 15 the schema public belongs to the database's owner (pg_database_owner), so
-- this also lets edc_owner create the tables there.
ALTER DATABASE edc OWNER TO edc_owner;
