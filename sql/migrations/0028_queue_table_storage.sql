-- Storage settings for the queue's hot tables, chosen with the soak (BENCHMARKS.md, "A queue
-- that stays fast while long claims run"; docs/operations.md, "What long claims cost").
--
-- Every job is updated twice (the attempt is recorded, then the job finishes) and each
-- attempt once, so dead rows come at a steady rate. The server's defaults vacuum a table
-- once 20 % of it is dead: on a queue whose history grows to millions of rows that is
-- hundreds of thousands of dead rows and claim-index entries walked by every claim. Here a
-- table is vacuumed once 2,000 rows are dead whatever its size, without the cost delay (the
-- tables are small and hot), and analysed after 2 % changes so the claim's plan sees the
-- queue as it is. The jobs table leaves a fifth of each page free so the attempt's update
-- (columns no index reads) can stay on its page (a HOT update: no new index entries).
--
-- Long claims still hold vacuum back while they run (a claiming transaction has an xid for
-- the whole model call); these settings let vacuum clean up as soon as they end.
ALTER TABLE queue.jobs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);

ALTER TABLE queue.attempts SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 20000
);
