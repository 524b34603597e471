//! The agent's own log, as a service manager or a log file receives it:
//! plain text when stderr is not a terminal, and no errors for what the
//! agent does on purpose, while a real failure is still reported.

mod common;

use common::agent::*;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use std::time::{Duration, Instant};

/// The log lines at `level` (`ERROR`, `WARN`): tracing's text format puts
/// the level, padded to five characters, after the timestamp.
fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(level))
        .collect()
}

/// An agent whose stderr is a file writes no ANSI escape codes: the
/// journal, a log file or a pipe gets plain text.
#[test]
fn log_to_a_file_has_no_colour_codes() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    agent.start();
    assert!(agent.stop().success(), "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("ferry agent starting"), "{log}");
    assert!(log.contains("connected; consuming"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in a log written to a file:\n{}",
        log.escape_debug()
    );
}

/// On a first start nothing exists on the broker: the agent creates its
/// queues, and later its dead-letter queue, without logging an error (nor
/// the broker's NOT_FOUND) for any of them.
#[test]
fn first_start_creates_its_queues_without_errors() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    agent.start();
    // A message nobody can be answered for goes to `<site>.dead-letter`,
    // which does not exist yet either.
    let dlq = format!("{}.dead-letter", agent.site);
    rt().block_on(async {
        let c = Client::connect().await;
        let id = uuid::Uuid::new_v4().to_string();
        c.publish_raw(
            &agent.queue("worker"),
            &[("task", s("dynamo.tasks.no_such_task")), ("id", s(&id))],
            br#"[[], {}, {}]"#,
            false,
        )
        .await;
        let t0 = Instant::now();
        loop {
            // A get from a queue not there yet closes its channel: a new
            // one each time.
            let ch = c.conn.create_channel().await.unwrap();
            if let Ok(Some(_)) = ch
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
                .await
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nothing in {dlq}; log:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(agent.stop().success(), "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("rejected a message"), "{log}");
    assert!(
        !log.contains("NOT_FOUND"),
        "NOT_FOUND in the log of a first start:\n{log}"
    );
    assert_eq!(
        lines_at(&log, "ERROR"),
        Vec::<&str>::new(),
        "errors in the log of a first start:\n{log}"
    );
}

/// A queue made beforehand with other arguments than Celery's (here a
/// priority queue) is served as it is, with a warning that names it.
#[test]
fn queue_with_other_arguments_is_used_with_a_warning() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let queue = agent.queue("worker");
    rt().block_on(async {
        let conn = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(10));
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(queue.as_str().into(), opts, args).await.unwrap();
        conn.close(200, "made".into()).await.unwrap();
    });
    agent.start();
    assert!(agent.stop().success(), "{}", agent.log());
    let log = agent.log();
    let warned: Vec<_> = lines_at(&log, "WARN")
        .into_iter()
        .filter(|l| l.contains("exists with other properties") && l.contains(&queue))
        .collect();
    assert_eq!(warned.len(), 1, "one warning for {queue}:\n{log}");
    assert!(
        warned[0].contains("x-max-priority"),
        "the broker's reason: {}",
        warned[0]
    );
}

/// A declare the broker refuses for another reason (the queue is another
/// connection's exclusive queue) is reported, and the agent tries again
/// until it can consume.
#[test]
fn refused_declare_is_reported_and_retried() {
    if !broker_or_skip() {
        return;
    }
    let mut agent = Agent::new("");
    let queue = agent.queue("worker");
    rt().block_on(async {
        let conn = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let opts = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(queue.as_str().into(), opts, FieldTable::default())
            .await
            .unwrap();
        agent.spawn();
        agent.wait_log("cannot set up the consumers", Duration::from_secs(30));
        // The exclusive queue goes with its connection.
        conn.close(200, "done".into()).await.unwrap();
    });
    agent.wait_log("connected; consuming", Duration::from_secs(30));
    assert!(agent.stop().success(), "{}", agent.log());
    let log = agent.log();
    let reported: Vec<_> = lines_at(&log, "WARN")
        .into_iter()
        .filter(|l| l.contains("cannot set up the consumers"))
        .collect();
    assert!(
        reported
            .iter()
            .all(|l| l.contains("RESOURCE_LOCKED") && l.contains(&queue)),
        "the refusal and its queue:\n{log}"
    );
}
