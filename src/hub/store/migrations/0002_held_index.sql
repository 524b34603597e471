-- Results held for their parent's are found by parent, a chunk at a time
-- in task id order. Counted rows (nearly all) stay out of the index, so
-- recording a result maintains one index entry less.
DROP INDEX tasks_parent;
CREATE INDEX tasks_held ON tasks (parent_task_id, task_id) WHERE final = 1 AND counted = 0;
