//! Faults waiting for requests: queued per method and path prefix, used in order, one per
//! request. The one queue behind every emulator's `inject` and the fault proxy's; each keeps
//! its own kind of fault.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct FaultQueue<F> {
    rules: Vec<Rule<F>>,
}

#[derive(Debug)]
struct Rule<F> {
    /// `"*"` matches any method.
    method: String,
    prefix: String,
    faults: VecDeque<F>,
}

impl<F> Default for FaultQueue<F> {
    fn default() -> Self {
        FaultQueue { rules: Vec::new() }
    }
}

impl<F: Clone> FaultQueue<F> {
    /// `faults`, in this order, for the next requests with this method (`"*"`: any) whose
    /// path starts with `prefix`, after the faults queued before for the same requests.
    pub fn push(&mut self, method: &str, prefix: &str, faults: impl IntoIterator<Item = F>) {
        let faults: VecDeque<F> = faults.into_iter().collect();
        if !faults.is_empty() {
            self.rules.push(Rule { method: method.to_owned(), prefix: prefix.to_owned(), faults });
        }
    }

    /// `fault` for the next `times` matching requests.
    pub fn repeat(&mut self, method: &str, prefix: &str, fault: F, times: usize) {
        self.push(method, prefix, std::iter::repeat(fault).take(times));
    }

    /// The fault for this request, if one is waiting for it.
    pub fn take(&mut self, method: &str, path: &str) -> Option<F> {
        let i = self.rules.iter().position(|r| {
            (r.method == "*" || r.method.eq_ignore_ascii_case(method))
                && path.starts_with(&r.prefix)
        })?;
        let fault = self.rules[i].faults.pop_front();
        if self.rules[i].faults.is_empty() {
            self.rules.remove(i);
        }
        fault
    }

    /// How many faults are still waiting.
    pub fn waiting(&self) -> usize {
        self.rules.iter().map(|r| r.faults.len()).sum()
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Drops the faults waiting for requests with exactly this method and prefix.
    pub fn clear_for(&mut self, method: &str, prefix: &str) {
        self.rules.retain(|r| r.method != method || r.prefix != prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_used_in_order_one_per_matching_request() {
        let mut q = FaultQueue::default();
        q.repeat("POST", "/a", 1, 2);
        q.push("*", "/a/b", [7, 8]);
        q.push("GET", "/c", []);
        assert_eq!(q.waiting(), 4);
        assert_eq!(q.take("GET", "/a"), None, "method");
        assert_eq!(q.take("POST", "/c"), None, "prefix");
        assert_eq!(q.take("post", "/a/b"), Some(1), "first queued first, any case");
        assert_eq!(q.take("GET", "/a/b/c"), Some(7), "any method");
        assert_eq!(q.take("POST", "/a"), Some(1));
        assert_eq!(q.take("POST", "/a"), None, "used up");
        q.clear_for("*", "/a/b");
        assert_eq!(q.waiting(), 0);
        q.repeat("GET", "/", 3, 1);
        q.clear();
        assert_eq!(q.take("GET", "/"), None);
    }
}
