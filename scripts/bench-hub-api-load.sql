-- Loads a hub database (migrated, empty) for scripts/bench-hub-api.sh:
-- :jobs jobs, the first :taskjobs of them with :tasks task rows between
-- them, interleaved as jobs running side by side write them (task row id
-- k belongs to job k mod :taskjobs + 1, so one job's page of rows sits on
-- as many heap pages as rows), each task with the columns a finished
-- migrate task has (a Celery id, its node, times, a summary). One
-- discovery per job, 2 % of tasks ERROR, 1 % FAILURE. The jobs' task
-- counters (job_task_stats) and file counts are filled from the rows, as
-- the hub keeps them. Job g was created (now - :jobs + g) minutes ago,
-- so the hub's housekeeping (jobs_ttl) leaves them all alone. Ids are given (job g, task k) and the identities set
-- after them; foreign keys are not checked row by row
-- (session_replication_role), the rows being consistent by construction.
\set ON_ERROR_STOP on
SELECT (extract(epoch FROM now()) * 1000000)::bigint - (:jobs + 100)::bigint * 60000000 AS t0 \gset
SET session_replication_role = replica;
BEGIN;
INSERT INTO jobs (id, workflow, fields, discovery, site, queue, friendly_name, state, created, started, completed,
                  owner_type, owner_id, owner_name, input_paths, roots, roots_published, dir_walk_complete,
                  expected, received, files_found, files_processed, files_failures)
SELECT g, 'premigrate', '{"lock_level": "implicit"}', 'dynamo.tasks.recursive_navigate', :'site', 'default',
       'premigrate of /data/project' || g, CASE WHEN g % 50 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
       (:t0)::bigint + g * 60000000, (:t0)::bigint + g * 60000000 + 1000000,
       (:t0)::bigint + g * 60000000 + 3600000000, 'user', 1, 'admin',
       '[{"path": "/data/project' || g || '"}]', 1, 1, 1, 0, 0, 0, 0, 0
FROM generate_series(1::bigint, :jobs) g;
COMMIT;
BEGIN;
INSERT INTO tasks (id, task_id, job_id, tasktype, site, queue, node, state, is_root, parent_task_id, children_count,
                   run, final, counted, created, started, completed, summary, result)
SELECT k, md5('t' || k)::uuid::text,
       k % :taskjobs + 1,
       CASE WHEN k <= :taskjobs THEN 'dynamo.tasks.recursive_navigate' ELSE 'dynamo.tasks.migrate' END,
       :'site', 'default', 'node-' || (k % 64),
       CASE WHEN k <= :taskjobs THEN 'SUCCESS' WHEN k % 100 = 7 THEN 'FAILURE' WHEN k % 50 = 3 THEN 'ERROR' ELSE 'SUCCESS' END,
       CASE WHEN k <= :taskjobs THEN 1 ELSE 0 END,
       CASE WHEN k <= :taskjobs THEN NULL ELSE md5('t' || ((k - 1) % :taskjobs + 1))::uuid::text END,
       CASE WHEN k <= :taskjobs THEN :tasks / :taskjobs - 1 ELSE 0 END,
       md5('r' || (k % :taskjobs))::uuid::text, 1, 1,
       (:t0)::bigint + k * 1000, (:t0)::bigint + k * 1000 + 500, (:t0)::bigint + k * 1000 + 2500000,
       '{"processed": 40, "skipped": 0, "failures": 0, "aborted": 0, "bytes": 41943040}', NULL
FROM generate_series(1::bigint, :tasks) k;
COMMIT;
BEGIN;
INSERT INTO job_task_stats (job_id, tasktype, state, n)
SELECT job_id, tasktype, state, COUNT(*) FROM tasks GROUP BY job_id, tasktype, state;
UPDATE jobs SET expected = s.n, received = s.n, files_found = 40 * s.n, files_processed = 40 * s.n
FROM (SELECT job_id, SUM(n) AS n FROM job_task_stats GROUP BY job_id) s WHERE jobs.id = s.job_id;
SELECT setval(pg_get_serial_sequence('jobs', 'id'), :jobs);
SELECT setval(pg_get_serial_sequence('tasks', 'id'), :tasks);
COMMIT;
VACUUM ANALYZE;
