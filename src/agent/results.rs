//! At-least-once delivery, answered once: the results of recently finished
//! tasks by id, so a redelivered task that already finished gets its
//! result again instead of running twice, and the tasks being handled now,
//! so a redelivery of one waits for the first handler instead of racing it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How many finished tasks' results are kept for redeliveries.
pub const REMEMBERED_RESULTS: usize = 10_000;

/// A finished task's answer: its result document and where it goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// The caller's result queue, if it asked for a result.
    pub reply_to: Option<String>,
    /// The result message's correlation id.
    pub correlation_id: String,
    /// The result document.
    pub document: Vec<u8>,
}

/// Recent answers by task id, oldest forgotten first.
#[derive(Debug)]
pub struct ResultMemory {
    capacity: usize,
    map: HashMap<String, Arc<Answer>>,
    order: VecDeque<String>,
}

impl ResultMemory {
    /// Keeps the last `capacity` answers.
    pub fn new(capacity: usize) -> ResultMemory {
        ResultMemory {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer of task `id`, if it finished recently.
    pub fn get(&self, id: &str) -> Option<Arc<Answer>> {
        self.map.get(id).cloned()
    }

    /// Keeps the answer of task `id`, forgetting the oldest beyond capacity.
    pub fn insert(&mut self, id: &str, answer: Arc<Answer>) {
        if self.map.insert(id.to_string(), answer).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// Finished and running tasks.
#[derive(Debug)]
pub struct Results {
    memory: Mutex<ResultMemory>,
    /// Tasks being handled here, by id: a redelivery of one waits until
    /// the first handler is done (its receiver turns true).
    running: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

impl Default for Results {
    fn default() -> Self {
        Results {
            memory: Mutex::new(ResultMemory::new(REMEMBERED_RESULTS)),
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl Results {
    /// The answer of task `id`, if it finished recently.
    pub fn answer(&self, id: &str) -> Option<Arc<Answer>> {
        self.memory.lock().expect("results").get(id)
    }

    /// Keeps the answer of task `id`.
    pub fn remember(&self, id: &str, answer: Arc<Answer>) {
        self.memory.lock().expect("results").insert(id, answer);
    }

    /// Takes task `id` for this handler, first waiting for any other
    /// handler of the same id to finish (checked and taken under one lock,
    /// so two deliveries never both run it).
    pub async fn claim(self: &Arc<Self>, id: &str) -> Claim {
        loop {
            let mut waiting = {
                let mut map = self.running.lock().expect("running");
                match map.get(id) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(false);
                        map.insert(id.to_string(), rx);
                        return Claim {
                            results: self.clone(),
                            id: id.to_string(),
                            done: tx,
                        };
                    }
                }
            };
            let _ = waiting.wait_for(|done| *done).await.map(|_| ());
        }
    }
}

/// A task id taken by one handler; dropping it frees the id and wakes any
/// redelivery of the same task waiting for it.
#[derive(Debug)]
pub struct Claim {
    results: Arc<Results>,
    id: String,
    done: watch::Sender<bool>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.results.running.lock().expect("running").remove(&self.id);
        self.done.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(n: u8) -> Arc<Answer> {
        Arc::new(Answer {
            reply_to: Some("r".into()),
            correlation_id: format!("c{n}"),
            document: vec![n],
        })
    }

    #[test]
    fn the_oldest_answers_are_forgotten_first() {
        let mut m = ResultMemory::new(2);
        m.insert("a", answer(1));
        m.insert("b", answer(2));
        // Inserting again keeps one entry, and does not refresh its age.
        m.insert("a", answer(3));
        m.insert("c", answer(4));
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get("b").unwrap().document, [2]);
        assert_eq!(m.get("c").unwrap().document, [4]);
        assert_eq!(m.order.len(), 2);
    }

    #[tokio::test]
    async fn a_redelivery_waits_for_the_first_handler() {
        let results = Arc::new(Results::default());
        let first = results.claim("t").await;
        let r2 = results.clone();
        let second = tokio::spawn(async move {
            let claim = r2.claim("t").await;
            // By the time the second handler holds the id, the first has
            // answered: it must find the answer and not run the task again.
            (r2.answer("t"), claim)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the second claim did not wait");
        results.remember("t", answer(9));
        drop(first);
        let (seen, _claim) = second.await.unwrap();
        assert_eq!(seen.unwrap().document, [9]);
        // Another id is never held up.
        let _other = results.claim("u").await;
    }
}
