//! Response bodies held for a field-level comparison, under one byte budget (`[limits]
//! compare_body_bytes`) shared by the capture side and every shadow.
//!
//! A digest needs no body; a field diff needs both bodies until the pair completes. Bodies are
//! copied while they stream in, as long as the budget has room; a body that does not fit is
//! dropped at once (the exchange falls back to the digest comparison, counted by the caller).
//! The bytes return to the budget when the [`HeldBody`] is dropped, wherever that happens.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// The shared byte budget. Clones share it.
#[derive(Clone, Debug)]
pub struct BodyBudget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes (0: nothing is ever held).
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Inner {
            limit,
            used: AtomicUsize::new(0),
        }))
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Takes `bytes` from the budget if they fit.
    fn reserve(&self, bytes: usize) -> bool {
        self.0
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.0.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.0.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// An empty body that grows within this budget.
    pub fn start(&self) -> BodyHold {
        BodyHold::Holding(HeldBody {
            bytes: Vec::new(),
            budget: self.clone(),
        })
    }
}

/// A body being held, or given up on.
#[derive(Debug)]
pub enum BodyHold {
    Holding(HeldBody),
    /// The body did not fit in the budget (or was not to be held).
    Dropped,
}

impl BodyHold {
    /// Appends `piece`, or drops the whole body (returning its bytes to the budget) when the
    /// budget has no room for it.
    pub fn extend(&mut self, piece: &[u8]) {
        if let Self::Holding(body) = self {
            if piece.is_empty() {
                return;
            }
            if body.budget.reserve(piece.len()) {
                body.bytes.extend_from_slice(piece);
            } else {
                *self = Self::Dropped;
            }
        }
    }

    /// The held body, if it was kept whole.
    pub fn finish(self) -> Option<HeldBody> {
        match self {
            Self::Holding(body) => Some(body),
            Self::Dropped => None,
        }
    }
}

/// A complete body, counted in its budget until dropped.
#[derive(Debug)]
pub struct HeldBody {
    bytes: Vec<u8>,
    budget: BodyBudget,
}

impl HeldBody {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Equal bodies are equal wherever they are counted.
impl PartialEq for HeldBody {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for HeldBody {}

impl Drop for HeldBody {
    fn drop(&mut self) {
        self.budget.release(self.bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_held_within_the_budget_and_released_on_drop() {
        let budget = BodyBudget::new(10);
        let mut first = budget.start();
        first.extend(b"hello");
        let first = first.finish().expect("fits");
        assert_eq!(first.bytes(), b"hello");
        assert_eq!(budget.used(), 5);
        let mut second = budget.start();
        second.extend(b"abc");
        second.extend(b"defg");
        assert!(matches!(second, BodyHold::Dropped), "8 more do not fit");
        assert_eq!(budget.used(), 5, "the dropped body's bytes are back");
        assert!(second.finish().is_none());
        drop(first);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_zero_budget_holds_only_empty_bodies() {
        let budget = BodyBudget::new(0);
        let mut empty = budget.start();
        empty.extend(b"");
        assert_eq!(empty.finish().expect("empty fits").bytes(), b"");
        let mut one = budget.start();
        one.extend(b"x");
        assert!(one.finish().is_none());
    }
}
