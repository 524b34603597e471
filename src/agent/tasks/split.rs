//! How a discovery walk splits over the site's nodes (distributed
//! discovery; `recursive_navigate`'s module says what a piece is): when
//! to share the directories the walk finds ([`crate::walk::Handoff`]),
//! with how many, and how the handed directories go out as pieces.

use super::context::{SinkError, TaskEnv};
use super::publish::Publisher;
use crate::task::PathObject;
use crate::walk::Handoff;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A walk that may give directories to the site's other nodes.
pub struct Split {
    handoff: Arc<Handoff>,
    /// When splitting may begin.
    from: Instant,
    /// When the discovery queue was last asked.
    asked: Option<Instant>,
    /// Pieces the queue has room for now: what was handed over goes out
    /// in at most this many.
    room: usize,
    /// Pieces sent.
    pieces: u64,
}

impl Split {
    /// Where the walk hands directories over.
    pub fn handoff(&self) -> Arc<Handoff> {
        self.handoff.clone()
    }

    /// Pieces sent.
    pub fn pieces(&self) -> u64 {
        self.pieces
    }

    /// A walk that may split once it has gone on for `after`.
    pub fn new(after: Duration) -> Split {
        Split {
            handoff: Arc::new(Handoff::new()),
            from: Instant::now() + after,
            asked: None,
            room: 0,
            pieces: 0,
        }
    }

    /// Every [`defaults::WALK_SPLIT_POLL`](crate::config::defaults::WALK_SPLIT_POLL)
    /// once splitting may begin: sends what was handed over since the
    /// last time, then asks the discovery queue how many others could take
    /// a piece: its consumers but this agent's own, less the messages
    /// already waiting there (the broker does not tell a busy consumer from
    /// an idle one, so at most one piece waits per other consumer). Until
    /// the next time, the walk shares the directories it finds with that
    /// many. Handed directories are sent once a period, not as they come,
    /// so that a big directory's subdirectories go out together in a few
    /// big pieces rather than one by one. The exception is the walk's
    /// first hand-over: it goes out as soon as every other consumer can
    /// have a directory of it, so the job's first piece does not wait a
    /// period (a walk that splits at once hands over most of its root's
    /// directories in the root's first read; docs/benchmarks.md,
    /// "Scale-out").
    pub fn poll(&mut self, publisher: &mut Publisher<'_>, env: &TaskEnv) -> Result<(), SinkError> {
        let now = Instant::now();
        if now < self.from {
            return Ok(());
        }
        if let Some(at) = self.asked
            && now.duration_since(at) < crate::config::defaults::WALK_SPLIT_POLL
        {
            if self.pieces == 0 && self.room > 0 && self.handoff.waiting() >= self.room {
                self.send(publisher, env)?;
            }
            return Ok(());
        }
        self.send(publisher, env)?;
        self.asked = Some(now);
        self.room = match publisher.sink().queue_counts(&env.queue_name) {
            Some(q) => q.consumers.saturating_sub(1).saturating_sub(q.messages) as usize,
            None => 0,
        };
        self.handoff.share_with(self.room);
        Ok(())
    }

    /// Publishes the directories handed over, dealt into at most `room`
    /// pieces (one when there is no room: the walk ended), under their
    /// wire paths.
    pub fn send(&mut self, publisher: &mut Publisher<'_>, env: &TaskEnv) -> Result<(), SinkError> {
        let dirs = self.handoff.take();
        if dirs.is_empty() {
            return Ok(());
        }
        let n = self.room.clamp(1, dirs.len());
        let mut pieces = vec![Vec::new(); n];
        for (i, dir) in dirs.iter().enumerate() {
            let piece = &mut pieces[i % n];
            if !piece.is_empty() {
                piece.push(b',');
            }
            let wire = env.paths.to_wire(dir).unwrap_or_else(|| dir.clone());
            PathObject::new(wire).write_json(piece);
        }
        for paths in pieces {
            if publisher.piece(&env.queue_name, &paths)?.is_some() {
                self.pieces += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tasks::QueueCounts;
    use crate::agent::tasks::context::memory::{self, Memory};
    use crate::config::defaults::WALK_SPLIT_POLL;
    use crate::task::TaskName;

    #[test]
    fn the_first_hand_over_goes_out_once_every_other_consumer_can_have_a_directory() {
        let msg = memory::message(
            TaskName::RecursiveNavigate,
            "walk",
            serde_json::json!({"paths": ["/t"]}),
        );
        let env = memory::env(3, Duration::from_secs(1));
        let mut sink = Memory {
            queue: Some(QueueCounts {
                messages: 0,
                consumers: 4,
            }),
            ..Memory::default()
        };
        let mut publisher = Publisher::new(&msg, &env, None, &mut sink);
        let mut split = Split::new(Duration::ZERO);
        let handoff = split.handoff();
        // The first poll asks the queue: three others could take a piece.
        split.poll(&mut publisher, &env).unwrap();
        let asked = Instant::now();
        // Of the first four directories found, one stays: two handed over
        // are too few for three others, and wait.
        for d in [b"/t/a", b"/t/b", b"/t/c"] {
            handoff.offer(d);
        }
        split.poll(&mut publisher, &env).unwrap();
        assert_eq!((split.pieces(), handoff.waiting()), (0, 2));
        // A third: each other consumer gets one at once, within the period.
        handoff.offer(b"/t/d");
        split.poll(&mut publisher, &env).unwrap();
        assert_eq!((split.pieces(), handoff.waiting()), (3, 0));
        // After the first, hand-overs wait for the period again.
        for d in [b"/t/e", b"/t/f", b"/t/g", b"/t/h"] {
            handoff.offer(d);
        }
        split.poll(&mut publisher, &env).unwrap();
        if asked.elapsed() < WALK_SPLIT_POLL {
            assert_eq!((split.pieces(), handoff.waiting()), (3, 3));
        }
        drop(publisher);
        let pieces: Vec<_> = sink
            .sent
            .iter()
            .map(|(q, m)| (q.as_str(), m.kwarg("paths").unwrap().get()))
            .collect();
        assert_eq!(
            pieces,
            [
                ("s1.default#discovery", r#"[{"path":"/t/b"}]"#),
                ("s1.default#discovery", r#"[{"path":"/t/c"}]"#),
                ("s1.default#discovery", r#"[{"path":"/t/d"}]"#),
            ]
        );
    }
}
