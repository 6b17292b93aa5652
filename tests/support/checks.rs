//! [`Checks`]: runs each check of a test, collecting the failures, so one run reports every
//! disagreement at once with the daemon's log. Shared by `e2e_campaign.rs`,
//! `e2e_campaign_rules.rs` and `e2e_campaign_api.rs` (`#[path]`-included next to `common`).
#![allow(dead_code)] // each test binary uses a different subset

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::common::Daemon;

/// Runs each check, collecting failures so one run reports every disagreement.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Runs `f`; a panic in it is recorded as a failure of the check `name`.
    pub fn run(&mut self, name: &str, f: impl FnOnce()) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            self.failures.push(format!("[{name}] {msg}"));
        }
    }

    /// Fails (with the daemon's log) with every failed check, if any.
    pub fn finish(self, d: &Daemon) {
        if let Some(report) = self.report("") {
            d.fail(&report);
        }
    }

    /// Like [`Checks::finish`], with `note` right after "N check(s) failed" and `tail`
    /// (computed only when something failed) after the failures and a blank line.
    pub fn finish_with(self, d: &Daemon, note: &str, tail: impl FnOnce() -> String) {
        if let Some(report) = self.report(note) {
            d.fail(&format!("{report}\n\n{}", tail()));
        }
    }

    fn report(&self, note: &str) -> Option<String> {
        (!self.failures.is_empty()).then(|| {
            format!(
                "{} check(s) failed{note}:\n{}",
                self.failures.len(),
                self.failures.join("\n\n")
            )
        })
    }
}
