//! Pipelining statements on one connection: send the next requests without
//! waiting for the answers to the previous ones, then read the answers in
//! order. tokio-postgres queues a request on a future's first poll, so
//! polling each future once, in order, fixes the order the server sees them
//! in; each request keeps its own Sync, so each statement is still parsed and
//! run on its own (one statement per Parse message), and after a failure the
//! server refuses the rest of an aborted transaction statement by statement.
//!
//! What it saves is one network round trip and two task wake-ups per
//! statement: on a thousand CREATEs, most of the agent's overhead over
//! `psql -1 -f`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::future::{maybe_done, MaybeDone};

/// At most this many requests wait for their answers at once: enough to keep
/// the server busy, few enough to bound the memory they hold.
pub const WINDOW: usize = 256;

/// Runs `futures` (each sending one request on its first poll) with up to
/// [`WINDOW`] in flight, in order; `each` sees every result in order. Stops
/// at the first `Err` and returns its index and error; requests already sent
/// after it are still answered by the server (and dropped here).
pub async fn run_in_order<F, T, E>(
    futures: impl IntoIterator<Item = F>,
    each: impl FnMut(usize, T),
) -> Result<(), (usize, E)>
where
    F: Future<Output = Result<T, E>>,
{
    // Collected before the first await: an iterator adapter held across the
    // awaits makes the caller's future lose `Send` (higher-ranked lifetimes).
    let groups: Vec<[F; 1]> = futures.into_iter().map(|future| [future]).collect();
    run_groups_in_order(groups, each).await
}

/// [`run_in_order`], where the window is only ever waited on between
/// groups: a group's requests are all sent before any answer is awaited. A
/// request that a future sends later, while its answer is read (such as
/// tokio-postgres looking up an unknown type), then follows a whole group,
/// never lands inside one — where a failed request before it would have
/// aborted the transaction it runs in.
pub async fn run_groups_in_order<G, F, T, E>(
    groups: impl IntoIterator<Item = G>,
    mut each: impl FnMut(usize, T),
) -> Result<(), (usize, E)>
where
    G: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>>,
{
    let mut in_flight: VecDeque<Pin<Box<MaybeDone<F>>>> = VecDeque::new();
    let mut done = 0;
    for group in groups {
        for future in group {
            let mut future = Box::pin(maybe_done(future));
            // One poll queues the request; the answer is awaited below.
            let _ = futures_util::poll!(future.as_mut());
            in_flight.push_back(future);
        }
        while in_flight.len() >= WINDOW {
            settle_first(&mut in_flight, &mut done, &mut each).await?;
        }
    }
    while !in_flight.is_empty() {
        settle_first(&mut in_flight, &mut done, &mut each).await?;
    }
    Ok(())
}

async fn settle_first<F, T, E>(
    in_flight: &mut VecDeque<Pin<Box<MaybeDone<F>>>>,
    done: &mut usize,
    each: &mut impl FnMut(usize, T),
) -> Result<(), (usize, E)>
where
    F: Future<Output = Result<T, E>>,
{
    let Some(mut first) = in_flight.pop_front() else {
        return Ok(());
    };
    first.as_mut().await;
    let index = *done;
    *done += 1;
    match first.as_mut().take_output() {
        Some(Ok(value)) => {
            each(index, value);
            Ok(())
        }
        Some(Err(error)) => Err((index, error)),
        // `MaybeDone` holds the output once awaited; taken only here.
        None => Ok(()),
    }
}
