//! Strata's one stance on poisoned locks: carry on.
//!
//! A panic while a `std::sync` lock is held poisons it. Every critical
//! section in Strata is a short run of in-memory updates with no `.await`
//! and nothing that can fail between the updates that belong together, so a
//! panic leaves the guarded data as it was before or after the section,
//! never half-changed; the guard is recovered and work goes on. A violated
//! invariant panics on purpose to stop its own thread, not to wedge every
//! later user of the lock. Locks are taken through [`Recover`] and [`RecoverRw`], so
//! the stance lives in one place.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locking a `Mutex` whether or not an earlier holder panicked.
pub trait Recover<T: ?Sized> {
    /// Locks, recovering the guard of a poisoned lock.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Recover<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Read and write locks of an `RwLock`, recovering a poisoned one.
pub trait RecoverRw<T: ?Sized> {
    /// Read-locks.
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    /// Write-locks.
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RecoverRw<T> for RwLock<T> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let mutex = std::sync::Arc::new(Mutex::new(7));
        let rw = std::sync::Arc::new(RwLock::new(8));
        let (m, r) = (mutex.clone(), rw.clone());
        let _ = std::thread::spawn(move || {
            let _m = m.lock().unwrap();
            let _r = r.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(mutex.is_poisoned() && rw.is_poisoned());
        assert_eq!(*mutex.lock_or_recover(), 7);
        assert_eq!(*rw.read_or_recover(), 8);
        *rw.write_or_recover() = 9;
        assert_eq!(*rw.read_or_recover(), 9);
    }
}
