-- Distributed discovery: walks of a split discovery opened (pieces sent)
-- less those closed (pieces counted). A job's walk is complete when a
-- counted discovery result brings it back to zero.
ALTER TABLE jobs ADD COLUMN walks_open BIGINT NOT NULL DEFAULT 0;
