//! The completed-task cache: shared, already-completed tasks for the commonest results.
//!
//! [`Task::from_result`](crate::Task::from_result) of `()`, `bool`, or an integer in
//! −1..=8 (0..=8 for unsigned types) returns a clone of a shared task instead of allocating
//! one, as .NET caches `Task.CompletedTask`, `Task.FromResult(true)` and small `int`s. A
//! clone is a reference-count increment: no allocation. The cache is built on first use.
//!
//! Model builds (`--cfg loom` / `--cfg shuttle`) have no cache: their primitives cannot live
//! in statics across executions, so there every `from_result` allocates.

use crate::task::Task;

/// Whether this build has the cache (callers skip looking, and its locking, when not).
pub(crate) const ENABLED: bool = cfg!(not(any(loom, shuttle)));

/// A shared completed task for `value`, if it is one of the cached results.
#[cfg(not(any(loom, shuttle)))]
pub(crate) fn cached<T: 'static>(value: &T) -> Option<Task<T>> {
    use crate::sync::OnceLock;
    use std::any::Any;
    use std::panic::Location;

    /// Clones `task` as a `Task<T>`; `None` unless `U` is `T`.
    fn same<U: 'static, T: 'static>(task: &Task<U>) -> Option<Task<T>> {
        (task as &dyn Any).downcast_ref::<Task<T>>().cloned()
    }

    fn completed<U: 'static>(value: U) -> Task<U> {
        Task::completed_at(value, Location::caller())
    }

    let value = value as &dyn Any;
    if value.is::<()>() {
        static UNIT: OnceLock<Task<()>> = OnceLock::new();
        return same(UNIT.get_or_init(|| completed(())));
    }
    if let Some(flag) = value.downcast_ref::<bool>() {
        static BOOLS: OnceLock<[Task<bool>; 2]> = OnceLock::new();
        return same(
            &BOOLS.get_or_init(|| [completed(false), completed(true)])[usize::from(*flag)],
        );
    }
    macro_rules! small_integers {
        ($($int:ty),*) => {$(
            if let Some(number) = value.downcast_ref::<$int>() {
                // Index 0 holds −1 (absent for unsigned types), index n + 1 holds n.
                static SMALL: OnceLock<Vec<Option<Task<$int>>>> = OnceLock::new();
                let index = (-1i8..=8).position(|n| <$int>::try_from(n).ok() == Some(*number))?;
                let cache = SMALL.get_or_init(|| {
                    (-1i8..=8).map(|n| <$int>::try_from(n).ok().map(completed)).collect()
                });
                return cache[index].as_ref().and_then(same);
            }
        )*};
    }
    small_integers!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);
    None
}

#[cfg(any(loom, shuttle))]
pub(crate) fn cached<T: 'static>(_value: &T) -> Option<Task<T>> {
    None
}
