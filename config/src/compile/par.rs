//! Spreading independent per-item work over the cores.
//!
//! Compilation is a chain of phases (services → clusters, routes → L4
//! table), but inside a phase every service is compiled on its own. Large
//! inputs are cut into one contiguous chunk per core (std scoped threads, as
//! the loader and validation do); results come back in input order, so the
//! output does not depend on the number of cores.

/// Items below which a phase stays on the calling thread (a thread costs
/// tens of µs; small configs compile in less).
const MIN_PARALLEL: usize = 512;

/// `f` over contiguous chunks of `items`, results concatenated in order.
pub(crate) fn map_chunks<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&[T]) -> Vec<R> + Sync,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || items.len() < MIN_PARALLEL {
        return f(items);
    }
    let size = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|sc| {
        let handles: Vec<_> = items.chunks(size).map(|c| sc.spawn(move || f(c))).collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// `f` of each item, in order (see [`map_chunks`]).
pub(crate) fn map<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    map_chunks(items, |c| c.iter().map(&f).collect())
}
