//! 坐席信息变更推送 (seed 000 L534-568) and 网格接入号信息变更推送 (L574-610): sans-IO diffs
//! of two directory snapshots and their grid payloads (digest §A.2.4, §A.2.5, §C.4).
//!
//! # Diffs
//!
//! [`diff_agents`] and [`diff_access_numbers`] compare an old and a new snapshot by key
//! (`agentId`; `accessNum`, which the contract calls unique and not modifiable, L594) and
//! return one change per key that was added (`01`), deleted (`02`) or whose pushed fields
//! differ (`03`) (change types L552, L592). Identical snapshots give nothing. Only pushed fields
//! count: an agent's skill-group order, or a skill group that no agent uses, changes nothing;
//! a skill group's rename modifies every agent in it (its `skgroupName` is pushed).
//!
//! Order is deterministic: deletes, then modifications, then adds, each by key. Deleting first
//! frees what an add may claim (an extension moving from a deleted agent to a new one), and
//! the grid sees no transient duplicate. When a snapshot holds one key twice, the first entry
//! wins (config validation refuses duplicate agent ids; the store's keys are unique).
//!
//! # Payloads
//!
//! Every value is a JSON string except the agent push's `skgroups`, which the contract types
//! as an array of `{skgroupNo, skgroupName}` (L559-561); the access-number push's `skgroups`
//! is a String (L601) and is sent as configured. A delete carries the record as it was, so the
//! grid gets the full row it asked for (every field is 必传 true). `telephoneNumber` (not
//! required, L558) is the agent's current extension, "" when it has none.
//!
//! On an add "the call platform must set the root department and the minimal role" (L552):
//! the role is the grid's business; for the department, an agent without one is sent with
//! [`ChangesConfig::default_agent_dept`].
//!
//! # Idempotency
//!
//! A change's key is a SHA-256 of the exact body pushed (plus the push kind), so re-enqueueing
//! the same change dedups and any different content gets a different key. The flip side: an
//! identical change made again later (add A, delete A, add A exactly as before) has the same
//! key as the first time; an outbox that keeps delivered keys forever must scope them (for
//! instance by a directory revision, see [`salted_idempotency_key`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::agents::directory::{AccessNumber, Agent, SkillGroup};

/// `changeType` (L552, L592).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeType {
    /// 01 新增.
    Add,
    /// 02 删除.
    Delete,
    /// 03 修改.
    Modify,
}

impl ChangeType {
    pub fn code(self) -> &'static str {
        match self {
            ChangeType::Add => "01",
            ChangeType::Delete => "02",
            ChangeType::Modify => "03",
        }
    }

    /// Output order of a diff: deletes, modifications, adds.
    fn rank(self) -> u8 {
        match self {
            ChangeType::Delete => 0,
            ChangeType::Modify => 1,
            ChangeType::Add => 2,
        }
    }
}

/// `[grid.changes]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangesConfig {
    /// `agentDept` for an agent that has no department (L552: on add, the call platform sets
    /// the root department). Default "".
    pub default_agent_dept: String,
    /// `entId` for an access number configured without one. Default "".
    pub default_ent_id: String,
}

impl ChangesConfig {
    /// The error names the bad key (relative to `[grid.changes]`).
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("default_agent_dept", &self.default_agent_dept),
            ("default_ent_id", &self.default_ent_id),
        ] {
            if v.chars().any(char::is_control) || v.len() > 256 {
                return Err(format!(
                    "{key}: must be at most 256 bytes without control characters"
                ));
            }
        }
        Ok(())
    }
}

// -------------------------------------------------------------------------------------------
// Agents

/// One of an agent's skill groups as pushed (`skgroupNo`, `skgroupName`, L560-561).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkillGroupRef {
    pub no: String,
    /// "" when the id is not in the directory's skill groups.
    pub name: String,
}

/// An agent as the change push describes it (L553-561).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub agent_id: String,
    pub agent_name: String,
    pub agent_dept: String,
    pub org_name: String,
    pub org_no: String,
    pub telephone_number: Option<String>,
    /// Sorted by number, no duplicates.
    pub skgroups: Vec<SkillGroupRef>,
}

impl AgentRecord {
    /// The pushed view of a directory agent.
    pub fn new(agent: &Agent, skill_groups: &[SkillGroup]) -> Self {
        let names: BTreeMap<&str, &str> = skill_groups
            .iter()
            .rev() // so the first definition of an id wins in the map
            .map(|g| (g.id.as_str(), g.name.as_str()))
            .collect();
        let ids: BTreeSet<&str> = agent.skill_groups.iter().map(String::as_str).collect();
        AgentRecord {
            agent_id: agent.agent_id.clone(),
            agent_name: agent.name.clone(),
            agent_dept: agent.department.clone(),
            org_name: agent.org_name.clone(),
            org_no: agent.org_no.clone(),
            telephone_number: agent.extension.clone().filter(|e| !e.is_empty()),
            skgroups: ids
                .into_iter()
                .map(|id| SkillGroupRef {
                    no: id.to_owned(),
                    name: names.get(id).copied().unwrap_or_default().to_owned(),
                })
                .collect(),
        }
    }
}

/// One agent change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentChange {
    pub change: ChangeType,
    /// The new record (the old one for a delete).
    pub agent: AgentRecord,
}

/// The agents and skill groups of one directory snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentSnapshot<'a> {
    pub agents: &'a [Agent],
    pub skill_groups: &'a [SkillGroup],
}

impl AgentSnapshot<'_> {
    fn records(&self) -> BTreeMap<String, AgentRecord> {
        let mut out = BTreeMap::new();
        for a in self.agents {
            out.entry(a.agent_id.clone())
                .or_insert_with(|| AgentRecord::new(a, self.skill_groups));
        }
        out
    }
}

/// Adds, deletes and modifications from `old` to `new` (order: see the module docs).
pub fn diff_agents(old: AgentSnapshot<'_>, new: AgentSnapshot<'_>) -> Vec<AgentChange> {
    diff(old.records(), new.records())
        .into_iter()
        .map(|(change, agent)| AgentChange { change, agent })
        .collect()
}

/// The agent-change keys in contract order (L552-559).
pub const AGENT_CHANGE_FIELDS: [&str; 8] = [
    "changeType",
    "agentId",
    "agentName",
    "agentDept",
    "orgName",
    "orgNo",
    "telephoneNumber",
    "skgroups",
];

impl AgentChange {
    /// The payload, keys in [`AGENT_CHANGE_FIELDS`] order.
    pub fn to_grid(&self, cfg: &ChangesConfig) -> Map<String, Value> {
        let a = &self.agent;
        let dept = if a.agent_dept.is_empty() {
            cfg.default_agent_dept.clone()
        } else {
            a.agent_dept.clone()
        };
        let skgroups = a
            .skgroups
            .iter()
            .map(|g| {
                let mut m = Map::new();
                m.insert("skgroupNo".into(), Value::String(g.no.clone()));
                m.insert("skgroupName".into(), Value::String(g.name.clone()));
                Value::Object(m)
            })
            .collect();
        let values = [
            Value::String(self.change.code().into()),
            Value::String(a.agent_id.clone()),
            Value::String(a.agent_name.clone()),
            Value::String(dept),
            Value::String(a.org_name.clone()),
            Value::String(a.org_no.clone()),
            Value::String(a.telephone_number.clone().unwrap_or_default()),
            Value::Array(skgroups),
        ];
        AGENT_CHANGE_FIELDS
            .iter()
            .zip(values)
            .map(|(k, v)| ((*k).to_owned(), v))
            .collect()
    }

    /// The payload with its outbox keys.
    pub fn to_push(&self, cfg: &ChangesConfig) -> AgentChangePush {
        let body = self.to_grid(cfg);
        change_push("agent-change", body, self.agent.agent_id.clone())
    }
}

/// The access-number change's keys in contract order (L592-601).
pub const ACCESS_NUMBER_CHANGE_FIELDS: [&str; 10] = [
    "changeType",
    "entId",
    "accessNum",
    "orgNo",
    "orgName",
    "cityNo",
    "cityName",
    "remark",
    "girdNo",
    "skgroups",
];

/// An access number as the change push describes it (L593-601). The directory's
/// `[[access_numbers]]` already holds every pushed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessNumberRecord {
    pub ent_id: String,
    pub access_num: String,
    pub org_no: String,
    pub org_name: String,
    pub city_no: String,
    pub city_name: String,
    pub remark: String,
    /// `girdNo` (sic, L600).
    pub grid_no: String,
    /// Sent as one String (L601), as configured.
    pub skgroups: String,
}

impl From<&AccessNumber> for AccessNumberRecord {
    fn from(n: &AccessNumber) -> Self {
        AccessNumberRecord {
            ent_id: n.ent_id.clone(),
            access_num: n.access_num.clone(),
            org_no: n.org_no.clone(),
            org_name: n.org_name.clone(),
            city_no: n.city_no.clone(),
            city_name: n.city_name.clone(),
            remark: n.remark.clone(),
            grid_no: n.grid_no.clone(),
            skgroups: n.skill_groups.clone(),
        }
    }
}

/// One access-number change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessNumberChange {
    pub change: ChangeType,
    /// The new record (the old one for a delete).
    pub number: AccessNumberRecord,
}

/// Adds, deletes and modifications from `old` to `new`, keyed by `accessNum`.
pub fn diff_access_numbers(old: &[AccessNumber], new: &[AccessNumber]) -> Vec<AccessNumberChange> {
    let index = |list: &[AccessNumber]| {
        let mut m = BTreeMap::new();
        for n in list {
            m.entry(n.access_num.clone())
                .or_insert_with(|| AccessNumberRecord::from(n));
        }
        m
    };
    diff(index(old), index(new))
        .into_iter()
        .map(|(change, number)| AccessNumberChange { change, number })
        .collect()
}

impl AccessNumberChange {
    /// The payload, keys in [`ACCESS_NUMBER_CHANGE_FIELDS`] order, every value a String.
    pub fn to_grid(&self, cfg: &ChangesConfig) -> Map<String, Value> {
        let n = &self.number;
        let ent_id = if n.ent_id.is_empty() {
            &cfg.default_ent_id
        } else {
            &n.ent_id
        };
        let values = [
            self.change.code(),
            ent_id,
            &n.access_num,
            &n.org_no,
            &n.org_name,
            &n.city_no,
            &n.city_name,
            &n.remark,
            &n.grid_no,
            &n.skgroups,
        ];
        ACCESS_NUMBER_CHANGE_FIELDS
            .iter()
            .zip(values)
            .map(|(k, v)| ((*k).to_owned(), Value::String(v.to_owned())))
            .collect()
    }

    /// The payload with its outbox keys.
    pub fn to_push(&self, cfg: &ChangesConfig) -> AccessNumberChangePush {
        let body = self.to_grid(cfg);
        change_push("access-number-change", body, self.number.access_num.clone())
    }
}

/// A change payload ready for the outbox. Its idempotency key is
/// `<kind>-<hex SHA-256 of kind and body>`: equal for equal content; its lane is the agent id
/// or the access number, so changes to one go in order.
pub type ChangePush = super::push::GridPush;
/// An agent change ready for the outbox (lane: the agent id).
pub type AgentChangePush = ChangePush;
/// An access-number change ready for the outbox (lane: the access number).
pub type AccessNumberChangePush = ChangePush;

fn change_push(kind: &str, body: Map<String, Value>, lane_key: String) -> ChangePush {
    let digest = digest(kind, &body, None);
    ChangePush::new(body, format!("{kind}-{digest}"), lane_key)
}

/// A change's key scoped by `salt` (e.g. a directory revision), for outboxes that remember
/// delivered keys forever and must not swallow a legitimate repeat of an old change.
pub fn salted_idempotency_key(p: &ChangePush, salt: u64) -> String {
    let kind = p.idempotency_key().rsplit_once('-').map_or("", |(k, _)| k);
    format!("{kind}-{}", digest(kind, p.body(), Some(salt)))
}

fn digest(kind: &str, body: &Map<String, Value>, salt: Option<u64>) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    if let Some(salt) = salt {
        h.update(salt.to_be_bytes());
    }
    // serde_json renders a Map in insertion order (preserve_order), which is fixed.
    h.update(Value::Object(body.clone()).to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Generic keyed diff, in deletes-modifies-adds order, each by key.
fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    old: BTreeMap<K, V>,
    new: BTreeMap<K, V>,
) -> Vec<(ChangeType, V)> {
    let mut out: Vec<(ChangeType, K, V)> = Vec::new();
    for (k, v) in &old {
        match new.get(k) {
            None => out.push((ChangeType::Delete, k.clone(), v.clone())),
            Some(n) if n != v => out.push((ChangeType::Modify, k.clone(), n.clone())),
            Some(_) => {}
        }
    }
    for (k, v) in &new {
        if !old.contains_key(k) {
            out.push((ChangeType::Add, k.clone(), v.clone()));
        }
    }
    out.sort_by(|a, b| (a.0.rank(), &a.1).cmp(&(b.0.rank(), &b.1)));
    out.into_iter().map(|(c, _, v)| (c, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, groups: &[&str]) -> Agent {
        Agent {
            agent_id: id.into(),
            name: format!("n{id}"),
            department: "d".into(),
            org_no: "64401".into(),
            org_name: "o".into(),
            extension: Some(format!("8{id}")),
            skill_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn no_op_diff_is_empty_and_order_is_irrelevant() {
        let groups = [SkillGroup {
            id: "g1".into(),
            name: "G1".into(),
        }];
        let a = [agent("1", &["g1", "g2"]), agent("2", &[])];
        let b = [agent("2", &[]), agent("1", &["g2", "g1", "g1"])];
        let old = AgentSnapshot {
            agents: &a,
            skill_groups: &groups,
        };
        let new = AgentSnapshot {
            agents: &b,
            skill_groups: &groups,
        };
        assert!(diff_agents(old, new).is_empty());
    }

    #[test]
    fn skill_group_rename_modifies_its_members_only() {
        let g_old = [SkillGroup {
            id: "g1".into(),
            name: "A".into(),
        }];
        let g_new = [SkillGroup {
            id: "g1".into(),
            name: "B".into(),
        }];
        let a = [agent("1", &["g1"]), agent("2", &[])];
        let d = diff_agents(
            AgentSnapshot {
                agents: &a,
                skill_groups: &g_old,
            },
            AgentSnapshot {
                agents: &a,
                skill_groups: &g_new,
            },
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].change, ChangeType::Modify);
        assert_eq!(d[0].agent.skgroups[0].name, "B");
    }

    #[test]
    fn keys_are_content_digests() {
        let cfg = ChangesConfig::default();
        let a = [agent("1", &[])];
        let d = diff_agents(
            AgentSnapshot::default(),
            AgentSnapshot {
                agents: &a,
                skill_groups: &[],
            },
        );
        let p1 = d[0].to_push(&cfg);
        let p2 = d[0].clone().to_push(&cfg);
        assert_eq!(p1.idempotency_key(), p2.idempotency_key());
        assert!(p1.idempotency_key().starts_with("agent-change-"));
        assert_eq!(p1.idempotency_key().len(), "agent-change-".len() + 64);
        let mut other = d[0].clone();
        other.change = ChangeType::Modify;
        assert_ne!(other.to_push(&cfg).idempotency_key(), p1.idempotency_key());
        assert_ne!(
            salted_idempotency_key(&p1, 1),
            salted_idempotency_key(&p1, 2)
        );
        assert!(salted_idempotency_key(&p1, 1).starts_with("agent-change-"));
        assert_eq!(p1.lane_key(), "1");
    }

    #[test]
    fn config_validation_names_the_key() {
        let cfg = ChangesConfig {
            default_ent_id: "a\nb".into(),
            ..ChangesConfig::default()
        };
        assert!(cfg.validate().unwrap_err().starts_with("default_ent_id:"));
        assert!(ChangesConfig::default().validate().is_ok());
        let parsed: Result<ChangesConfig, _> = toml::from_str("bogus = 1");
        assert!(parsed.is_err());
    }
}
