CREATE TABLE users (
    id {pk},
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL
);
CREATE TABLE clientkeys (
    id {pk},
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created BIGINT NOT NULL
);
CREATE TABLE sites (
    id {pk},
    name TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    shortcode TEXT NOT NULL,
    type TEXT,
    timezone TEXT,
    public_url TEXT,
    color TEXT NOT NULL DEFAULT '[]',
    bandwidth BIGINT,
    file_batch_size BIGINT NOT NULL,
    file_batch_gb DOUBLE PRECISION NOT NULL,
    enable_auto_file_batch_sizing BIGINT NOT NULL,
    includes TEXT NOT NULL DEFAULT '[]',
    excludes TEXT NOT NULL DEFAULT '[]',
    lock_threshold BIGINT NOT NULL,
    gpfs_iscan_buckets BIGINT,
    gpfs_iscan_threads BIGINT,
    created BIGINT NOT NULL
);
CREATE TABLE nodes (
    id {pk},
    name TEXT NOT NULL UNIQUE,
    site_id BIGINT REFERENCES sites(id) ON DELETE SET NULL,
    last_heartbeat BIGINT,
    offline BIGINT NOT NULL DEFAULT 0,
    sw_ver TEXT,
    capabilities TEXT NOT NULL DEFAULT '{}',
    created BIGINT NOT NULL
);
CREATE TABLE queues (
    id {pk},
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    created BIGINT NOT NULL,
    UNIQUE (site_id, name)
);
CREATE TABLE queue_nodes (
    queue_id BIGINT NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    node_id BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    functions TEXT NOT NULL DEFAULT '[]',
    last_heartbeat BIGINT NOT NULL,
    PRIMARY KEY (queue_id, node_id)
);
CREATE TABLE workflows (
    id {pk},
    name TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    icon_classes TEXT NOT NULL DEFAULT '[]',
    discovery TEXT,
    enabled BIGINT NOT NULL DEFAULT 1,
    visible BIGINT NOT NULL DEFAULT 1,
    schedule_only BIGINT NOT NULL DEFAULT 0,
    external_only BIGINT NOT NULL DEFAULT 0,
    fields TEXT NOT NULL DEFAULT '[]',
    filter_rules TEXT NOT NULL DEFAULT '[]',
    discovery_options TEXT NOT NULL DEFAULT '{}',
    preferred_queue TEXT,
    builtin BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE jobs (
    id {pk},
    workflow TEXT,
    fields TEXT NOT NULL DEFAULT '{}',
    discovery TEXT,
    site TEXT NOT NULL,
    queue TEXT NOT NULL,
    friendly_name TEXT NOT NULL,
    state TEXT NOT NULL,
    created BIGINT NOT NULL,
    started BIGINT,
    completed BIGINT,
    owner_type TEXT NOT NULL,
    owner_id BIGINT NOT NULL,
    owner_name TEXT NOT NULL,
    clientkey_id BIGINT,
    input_paths TEXT NOT NULL DEFAULT '[]',
    roots BIGINT NOT NULL DEFAULT 0,
    roots_published BIGINT NOT NULL DEFAULT 0,
    dir_walk_complete BIGINT NOT NULL DEFAULT 0,
    expected BIGINT NOT NULL DEFAULT 0,
    received BIGINT NOT NULL DEFAULT 0,
    orphans BIGINT NOT NULL DEFAULT 0,
    tasks_failed BIGINT NOT NULL DEFAULT 0,
    files_found BIGINT NOT NULL DEFAULT 0,
    files_processed BIGINT NOT NULL DEFAULT 0,
    files_skipped BIGINT NOT NULL DEFAULT 0,
    files_aborted BIGINT NOT NULL DEFAULT 0,
    files_failures BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE TABLE tasks (
    id {pk},
    task_id TEXT NOT NULL UNIQUE,
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    tasktype TEXT NOT NULL,
    site TEXT,
    queue TEXT,
    node TEXT,
    state TEXT NOT NULL,
    is_root BIGINT NOT NULL DEFAULT 0,
    parent_task_id TEXT,
    children_count BIGINT NOT NULL DEFAULT 0,
    run TEXT,
    final BIGINT NOT NULL DEFAULT 0,
    counted BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL,
    started BIGINT,
    completed BIGINT,
    summary TEXT,
    result TEXT
);
CREATE INDEX tasks_job ON tasks (job_id, id);
CREATE INDEX tasks_parent ON tasks (parent_task_id);
CREATE INDEX tasks_node ON tasks (node, state);
CREATE TABLE job_task_stats (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    tasktype TEXT NOT NULL,
    state TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (job_id, tasktype, state)
);
CREATE TABLE jobstats (
    id {pk},
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    code TEXT,
    message TEXT NOT NULL,
    task_id TEXT NOT NULL,
    UNIQUE (job_id, path)
);
CREATE TABLE outbox (
    id {pk},
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    task_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    headers TEXT NOT NULL,
    body TEXT NOT NULL
);
