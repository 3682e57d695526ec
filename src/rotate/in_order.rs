//! Hands on results that finish in any order in the order their work was listed: a run over
//! a fleet reports each credential's summary as soon as every earlier one is reported, and
//! holds only those that finished ahead of the slowest earlier one (a few while pipelines
//! take about as long as each other; more behind one that waits minutes for Service
//! Manager), not the fleet's as a whole.

use std::collections::BTreeMap;

/// Results numbered 0, 1, 2, … in, handed to `each` in that order; `None` stands for a
/// result that will never come (a task that ended abnormally), so the ones after it are
/// not held back.
pub(super) struct InOrder<T, F: FnMut(T)> {
    next: usize,
    ahead: BTreeMap<usize, Option<T>>,
    each: F,
}

impl<T, F: FnMut(T)> InOrder<T, F> {
    pub(super) fn new(each: F) -> Self {
        InOrder {
            next: 0,
            ahead: BTreeMap::new(),
            each,
        }
    }

    /// Result `i` is in: hands it on, with every held one it was the last gap before.
    pub(super) fn put(&mut self, i: usize, result: Option<T>) {
        if i != self.next {
            self.ahead.insert(i, result);
            return;
        }
        let mut result = result;
        loop {
            if let Some(r) = result {
                (self.each)(r);
            }
            self.next += 1;
            match self.ahead.remove(&self.next) {
                Some(r) => result = r,
                None => break,
            }
        }
    }

    /// How many results are held, waiting for an earlier one.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.ahead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_handed_on_in_order_and_only_the_early_ones_are_held() {
        let mut seen = Vec::new();
        let mut held = Vec::new();
        {
            let mut o = InOrder::new(|v: usize| seen.push(v));
            for (i, r) in [
                (2, Some(2)),
                (0, Some(0)),
                (3, None),
                (1, Some(1)),
                (5, Some(5)),
            ] {
                o.put(i, r);
                held.push(o.held());
            }
            o.put(4, Some(4));
            held.push(o.held());
        }
        // 3 never came (None) and does not hold back 4 and 5.
        assert_eq!(seen, [0, 1, 2, 4, 5]);
        assert_eq!(held, [1, 1, 2, 0, 1, 0]);
    }

    #[test]
    fn results_in_order_are_never_held() {
        let mut seen = Vec::new();
        let mut o = InOrder::new(|v: u32| seen.push(v));
        for i in 0..1000 {
            o.put(i, Some(i as u32));
            assert_eq!(o.held(), 0);
        }
        drop(o);
        assert_eq!(seen.len(), 1000);
    }
}
