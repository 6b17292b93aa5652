//! Line capacity: how many calls each gateway (线路) may carry at once, shared by every
//! campaign, and how many each campaign may use on it (seed 004: a gateway's `concurrency`,
//! `usedConcurrency`, `availableConcurrency` in `getAvailableList`, 004:L76-110; a task's
//! `callGWs` `[{"code","concurrency"}]` in `submitCallTask`, 004:L129; `setTaskConcurrent`).
//! Sans-IO: the runtime acquires a line before `originate` and releases it at hang-up; the
//! pacer sees [`LineBook::headroom`] as `line_headroom`, so no policy can exceed a cap.

use std::collections::BTreeMap;

/// A gateway's code (`gwCode`).
pub type GatewayCode = String;
/// A campaign's code (`callTaskCode`).
pub type TaskCode = String;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Gateway {
    capacity: u32,
    used: u32,
    enabled: bool,
}

/// One gateway as `getAvailableList` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayUsage {
    pub gw_code: GatewayCode,
    pub concurrency: u32,
    pub used_concurrency: u32,
    pub available_concurrency: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("gateway {0:?} is not configured")]
    UnknownGateway(GatewayCode),
    #[error("task {0:?} has no lines")]
    UnknownTask(TaskCode),
}

/// Capacity and use of every gateway and every task's share of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineBook {
    gateways: BTreeMap<GatewayCode, Gateway>,
    /// task → gateway → (cap for the task, calls of the task on it).
    tasks: BTreeMap<TaskCode, BTreeMap<GatewayCode, (u32, u32)>>,
}

impl LineBook {
    /// Adds or updates a gateway. Calls in progress stay counted: lowering a capacity below
    /// its use only stops new calls.
    pub fn set_gateway(&mut self, code: &str, capacity: u32, enabled: bool) {
        let g = self.gateways.entry(code.to_owned()).or_insert(Gateway {
            capacity,
            used: 0,
            enabled,
        });
        g.capacity = capacity;
        g.enabled = enabled;
    }

    /// Sets a task's lines (`callGWs`, or `setTaskConcurrent`). Calls in progress stay
    /// counted against the gateways they use.
    pub fn set_task(&mut self, task: &str, lines: &[(GatewayCode, u32)]) -> Result<(), LineError> {
        if let Some((code, _)) = lines.iter().find(|(c, _)| !self.gateways.contains_key(c)) {
            return Err(LineError::UnknownGateway(code.clone()));
        }
        let old = self.tasks.remove(task).unwrap_or_default();
        let mut new: BTreeMap<GatewayCode, (u32, u32)> = BTreeMap::new();
        for (code, cap) in lines {
            let used = old.get(code).map_or(0, |(_, u)| *u);
            new.insert(code.clone(), (*cap, used));
        }
        // Calls on gateways the task no longer lists keep their count until they end.
        for (code, (_, used)) in old {
            if used > 0 {
                new.entry(code).or_insert((0, used));
            }
        }
        self.tasks.insert(task.to_owned(), new);
        Ok(())
    }

    fn free_on(&self, task: &BTreeMap<GatewayCode, (u32, u32)>, code: &str) -> u32 {
        let Some(g) = self.gateways.get(code).filter(|g| g.enabled) else {
            return 0;
        };
        let Some((cap, used)) = task.get(code) else {
            return 0;
        };
        cap.saturating_sub(*used)
            .min(g.capacity.saturating_sub(g.used))
    }

    /// How many more calls `task` may place now, across its gateways.
    pub fn headroom(&self, task: &str) -> u32 {
        let Some(t) = self.tasks.get(task) else {
            return 0;
        };
        t.keys()
            .map(|code| self.free_on(t, code))
            .fold(0u32, u32::saturating_add)
    }

    /// Takes a line for one call of `task`: the listed gateway with the most free capacity
    /// (spreading load), or `None` when every one is full.
    pub fn acquire(&mut self, task: &str) -> Option<GatewayCode> {
        let t = self.tasks.get(task)?;
        let code = t
            .keys()
            .map(|c| (self.free_on(t, c), c))
            .filter(|(free, _)| *free > 0)
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
            .map(|(_, c)| c.clone())?;
        if let Some(e) = self.tasks.get_mut(task).and_then(|t| t.get_mut(&code)) {
            e.1 += 1;
        }
        if let Some(g) = self.gateways.get_mut(&code) {
            g.used += 1;
        }
        Some(code)
    }

    /// Gives a line back when its call ends. Unknown or already-free lines are ignored (a
    /// hang-up reported twice must not free someone else's line).
    pub fn release(&mut self, task: &str, code: &str) {
        let Some(e) = self.tasks.get_mut(task).and_then(|t| t.get_mut(code)) else {
            return;
        };
        if e.1 == 0 {
            return;
        }
        e.1 -= 1;
        if let Some(g) = self.gateways.get_mut(code) {
            g.used = g.used.saturating_sub(1);
        }
    }

    /// Every gateway's capacity and use (`getAvailableList`).
    pub fn usage(&self) -> Vec<GatewayUsage> {
        self.gateways
            .iter()
            .map(|(code, g)| GatewayUsage {
                gw_code: code.clone(),
                concurrency: g.capacity,
                used_concurrency: g.used,
                available_concurrency: if g.enabled {
                    g.capacity.saturating_sub(g.used)
                } else {
                    0
                },
            })
            .collect()
    }

    pub fn task_lines(&self, task: &str) -> Result<Vec<(GatewayCode, u32, u32)>, LineError> {
        self.tasks
            .get(task)
            .map(|t| {
                t.iter()
                    .map(|(c, (cap, used))| (c.clone(), *cap, *used))
                    .collect()
            })
            .ok_or_else(|| LineError::UnknownTask(task.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn book() -> LineBook {
        let mut b = LineBook::default();
        b.set_gateway("1000", 3, true);
        b.set_gateway("1001", 2, true);
        b.set_task("T1", &[("1000".into(), 2), ("1001".into(), 5)])
            .unwrap();
        b.set_task("T2", &[("1000".into(), 10)]).unwrap();
        b
    }

    #[test]
    fn caps_of_the_task_and_of_the_gateway_both_hold() {
        let mut b = book();
        assert_eq!(b.headroom("T1"), 4); // min(2,3) + min(5,2)
        assert_eq!(b.headroom("T2"), 3);
        let mut got = Vec::new();
        while let Some(g) = b.acquire("T1") {
            got.push(g);
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got.iter().filter(|g| *g == "1000").count(), 2);
        // T1 holds two of 1000's three lines: T2 gets the last one.
        assert_eq!(b.headroom("T2"), 1);
        assert_eq!(b.acquire("T2").as_deref(), Some("1000"));
        assert_eq!(b.acquire("T2"), None);
        let u = b.usage();
        assert_eq!(u[0].used_concurrency, 3);
        assert_eq!(u[0].available_concurrency, 0);
        b.release("T1", "1000");
        assert_eq!(b.headroom("T2"), 1);
        // A double release frees nothing more.
        b.release("T1", "1001");
        b.release("T1", "1001");
        b.release("T1", "1001");
        assert_eq!(b.usage()[1].used_concurrency, 0);
    }

    #[test]
    fn disabled_gateways_and_changed_caps() {
        let mut b = book();
        b.acquire("T1");
        b.set_gateway("1001", 2, false);
        assert_eq!(b.headroom("T1"), 1, "only 1000 left, one of two used");
        assert_eq!(b.usage()[1].available_concurrency, 0);
        // setTaskConcurrent lowers the cap below use: no new calls, the running one counts.
        b.set_task("T1", &[("1000".into(), 0)]).unwrap();
        assert_eq!(b.headroom("T1"), 0);
        assert!(matches!(
            b.set_task("T1", &[("9999".into(), 1)]),
            Err(LineError::UnknownGateway(_))
        ));
        assert_eq!(b.headroom("nope"), 0);
        assert!(b.task_lines("nope").is_err());
    }

    proptest! {
        #[test]
        fn use_never_exceeds_any_cap(ops in proptest::collection::vec((0u8..3, 0u8..2, 0u8..2), 0..300)) {
            let mut b = book();
            let mut held: Vec<(String, String)> = Vec::new();
            for (op, t, g) in ops {
                let task = if t == 0 { "T1" } else { "T2" };
                match op {
                    0 => {
                        let before = b.headroom(task);
                        match b.acquire(task) {
                            Some(code) => { prop_assert!(before > 0); held.push((task.into(), code)); }
                            None => prop_assert_eq!(before, 0),
                        }
                    }
                    1 => if let Some(i) = held.iter().position(|(tk, _)| tk == task) {
                        let (tk, code) = held.remove(i);
                        b.release(&tk, &code);
                    },
                    _ => b.set_gateway(if g == 0 { "1000" } else { "1001" }, u32::from(g) + 1, true),
                }
                for u in b.usage() {
                    let held_here = held.iter().filter(|(_, c)| *c == u.gw_code).count() as u32;
                    prop_assert_eq!(u.used_concurrency, held_here);
                }
                for (task, lines) in [("T1", b.task_lines("T1").unwrap()), ("T2", b.task_lines("T2").unwrap())] {
                    for (code, _cap, used) in lines {
                        let n = held.iter().filter(|(tk, c)| tk == task && *c == code).count() as u32;
                        prop_assert_eq!(used, n);
                    }
                }
            }
        }
    }
}
