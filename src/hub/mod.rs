//! `ferry hub`: the coordinator. A REST API in the shapes of Ngenea Hub's
//! (workflows, jobs, tasks, sites, nodes, queues, health, auth), a
//! database (SQLite by default, PostgreSQL by URL), and the broker side:
//! it publishes each job's first tasks, counts every result the agents
//! send back to its durable results queue, and follows the agents'
//! heartbeats; and a web page for people ([`ui`]). docs/hub.md is its
//! manual.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod bisync;
pub mod browse;
pub mod configs;
pub mod control;
pub mod cron;
pub mod housekeeping;
pub mod ingest;
pub mod jobctl;
pub mod metrics;
pub mod monitor;
pub mod schedule;
pub mod serve;
pub mod store;
pub mod submit;
pub mod tls;
pub mod typectl;
pub mod ui;
pub mod workflows;
