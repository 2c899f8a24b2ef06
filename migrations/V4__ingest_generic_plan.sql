-- ingest_records() takes its records as arrays. Planning its statements for the arrays at hand (a
-- "custom plan") looks cheaper to PostgreSQL than one generic plan, so it planned the big statement
-- again on every call: about a third of the database's time per record in the default
-- configuration. A generic plan is planned once per connection and is as good for 1 or 64 records.
ALTER FUNCTION ingest_records SET plan_cache_mode = force_generic_plan;
