//! `Batcher` under arbitrary limits and item sizes: never panics, emits
//! every item exactly once and in order, never an empty batch, never more
//! paths than `paths_limit` allowed at that push, and over the data or
//! message limit only with a lone item; the last partial batch is not full
//! (a full batch never waits for the next item).
#![no_main]

use ferry::batch::{BatchLimits, Batcher};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    max_paths: usize,
    max_data_bytes: Option<u64>,
    max_message_bytes: Option<usize>,
    dynamic: bool,
    items: Vec<Item>,
}

#[derive(Arbitrary, Debug)]
struct Item {
    data: u64,
    message: usize,
    /// The same item pushed this many times more (so that dynamic sizing's
    /// ranges at 1,000 and 10,000 discovered paths are reached).
    repeat: u16,
}

/// Total pushes at most, to keep one run fast.
const MAX_PUSHES: usize = 30_000;

fuzz_target!(|input: Input| {
    let limits = BatchLimits {
        max_paths: input.max_paths,
        max_data_bytes: input.max_data_bytes,
        max_message_bytes: input.max_message_bytes,
        dynamic: input.dynamic,
    };
    let mut sizes: Vec<(u64, usize)> = Vec::new();
    for it in &input.items {
        let n = (usize::from(it.repeat) + 1).min(MAX_PUSHES - sizes.len());
        sizes.extend(std::iter::repeat_n((it.data, it.message), n));
        if sizes.len() == MAX_PUSHES {
            break;
        }
    }

    // (batch, index of the push that emitted it; len() for `finish`)
    let mut batches: Vec<(Vec<usize>, usize)> = Vec::new();
    let mut b = Batcher::new(limits);
    for (i, &(d, m)) in sizes.iter().enumerate() {
        assert_eq!(b.discovered(), i as u64);
        b.push(i, d, m, |batch| batches.push((batch, i)));
    }
    assert_eq!(b.discovered(), sizes.len() as u64);
    let last = b.finish();
    let last_len = last.as_ref().map_or(0, Vec::len);
    batches.extend(last.map(|v| (v, sizes.len())));

    // Every item once, in order; no empty batch.
    let flat: Vec<usize> = batches.iter().flat_map(|(v, _)| v.iter().copied()).collect();
    assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>());
    assert!(batches.iter().all(|(v, _)| !v.is_empty()));

    for (batch, at) in &batches {
        // The path limit in force at the push that closed it (the last push
        // for `finish`); a limit of 0 still lets one item through.
        let limit = limits.paths_limit(at.min(&sizes.len().saturating_sub(1)).to_owned() as u64);
        assert!(
            batch.len() <= limit.max(1),
            "batch of {} over path limit {limit} at push {at}",
            batch.len()
        );
        let data: u128 = batch.iter().map(|&i| u128::from(sizes[i].0)).sum();
        let msg: u128 = batch.iter().map(|&i| sizes[i].1 as u128).sum();
        if batch.len() > 1 {
            if let Some(m) = limits.max_data_bytes {
                assert!(data <= u128::from(m), "batch {batch:?} holds {data} > {m} data bytes");
            }
            if let Some(m) = limits.max_message_bytes {
                assert!(msg <= m as u128, "batch {batch:?} holds {msg} > {m} message bytes");
            }
        }
    }

    // The batch left for `finish` is not full: it would have gone out.
    if last_len > 0 {
        let (batch, _) = batches.last().unwrap();
        let limit = limits.paths_limit(sizes.len() as u64 - 1);
        let data: u128 = batch.iter().map(|&i| u128::from(sizes[i].0)).sum();
        let msg: u128 = batch.iter().map(|&i| sizes[i].1 as u128).sum();
        assert!(batch.len() < limit, "full batch of {} waited for finish", batch.len());
        assert!(limits.max_data_bytes.is_none_or(|m| data < u128::from(m)));
        assert!(limits.max_message_bytes.is_none_or(|m| msg < m as u128));
    }

    // And the boundaries are exactly the documented rule's, computed
    // without overflow: close the current batch if the item does not fit,
    // add it, close the batch as soon as it is full.
    let mut want: Vec<Vec<usize>> = Vec::new();
    let (mut cur, mut data, mut msg) = (Vec::new(), 0u128, 0u128);
    for (i, &(d, m)) in sizes.iter().enumerate() {
        let limit = limits.paths_limit(i as u64);
        let (d, m) = (u128::from(d), m as u128);
        let over_d = limits.max_data_bytes.is_some_and(|x| data + d > u128::from(x));
        let over_m = limits.max_message_bytes.is_some_and(|x| msg + m > x as u128);
        if !cur.is_empty() && (cur.len() >= limit || over_d || over_m) {
            want.push(std::mem::take(&mut cur));
            (data, msg) = (0, 0);
        }
        cur.push(i);
        data += d;
        msg += m;
        let full_d = limits.max_data_bytes.is_some_and(|x| data >= u128::from(x));
        let full_m = limits.max_message_bytes.is_some_and(|x| msg >= x as u128);
        if cur.len() >= limit || full_d || full_m {
            want.push(std::mem::take(&mut cur));
            (data, msg) = (0, 0);
        }
    }
    if !cur.is_empty() {
        want.push(cur);
    }
    let got: Vec<Vec<usize>> = batches.into_iter().map(|(v, _)| v).collect();
    assert_eq!(got, want, "limits {limits:?}");
});
