//! One table of the settings the core's decisions depend on: each one's configuration key,
//! its [`Config`] field, its unit, its bounds, its default and what it means. The shell's
//! configuration parser, `pgha journal replay --set`, `pgha explain`'s settings and prevention
//! text and docs/configuration.md's `[replication]` table (checked by a test) all read it.
//! No I/O: parsing a value here is parsing a string or a number already read.
//!
//! The etcd mode's timings (issue 13, `[etcd]`) have a table of the same kind,
//! [`ETCD_SETTINGS`], over [`EtcdTimings`] (not yet part of the journaled [`Config`]); the
//! shell's parser and docs/configuration.md's `[etcd]` table read it.
//!
//! The fast profile of the simulator, the e2e tests and the demo is here too ([`FAST`],
//! [`Config::fast`], [`fast_toml`]).

use std::fmt;

use crate::config::{Config, ConfigError, EtcdTimings, Isolation, SplitBrainRule};

/// One year in milliseconds: the longest duration any setting takes.
pub const YEAR_MS: u64 = 365 * 86_400_000;

/// How a setting's value is written and stored, in a [`Config`] or (the etcd mode's
/// timings, [`ETCD_SETTINGS`]) in an [`EtcdTimings`].
#[derive(Debug)]
pub enum Field<C: 'static = Config> {
    /// A duration: seconds (fractions allowed) in the file and on the command line,
    /// milliseconds in [`Config`].
    Ms {
        get: fn(&C) -> u64,
        set: fn(&mut C, u64),
    },
    /// A whole number.
    Count {
        get: fn(&C) -> u32,
        set: fn(&mut C, u32),
    },
    /// One of `names`; the field is read and written as an index into them.
    Choice {
        names: &'static [&'static str],
        get: fn(&C) -> usize,
        set: fn(&mut C, usize),
    },
}

// By hand: a derive would ask `C: Copy`, and `Config` is not (only function pointers to it
// are stored).
impl<C> Clone for Field<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for Field<C> {}

/// A setting's value in the table's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Ms(u64),
    Count(u32),
    Name(&'static str),
}

impl fmt::Display for Value {
    /// As written in a configuration file or after `--set key=`: seconds for a duration
    /// (`0.5`), the number, the name (unquoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Ms(ms) => write!(f, "{}", *ms as f64 / 1000.0),
            Value::Count(n) => write!(f, "{n}"),
            Value::Name(s) => f.write_str(s),
        }
    }
}

/// A setting's default.
#[derive(Debug)]
pub enum DefaultValue<C: 'static = Config> {
    Fixed(Value),
    /// Derived from the settings before it in [`SETTINGS`]; `doc` says how, for the docs.
    Derived {
        from: fn(&C) -> Value,
        doc: &'static str,
    },
}

impl<C> Clone for DefaultValue<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for DefaultValue<C> {}

/// One setting of [`Config`] (or, for the etcd mode, of [`EtcdTimings`]) with a
/// configuration key.
#[derive(Debug)]
pub struct Setting<C: 'static = Config> {
    /// `section.name`, e.g. `replication.connect_timeout`.
    pub key: &'static str,
    pub field: Field<C>,
    /// The least and the greatest value: milliseconds for a duration, the count for a count
    /// (unused for a choice).
    pub min: u64,
    pub max: u64,
    pub default: DefaultValue<C>,
    /// What it means, in one line.
    pub doc: &'static str,
}

impl<C> Clone for Setting<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for Setting<C> {}

impl<C> Setting<C> {
    /// The section of the configuration file (`replication`).
    pub fn section(&self) -> &'static str {
        self.key.split_once('.').map_or("", |(s, _)| s)
    }

    /// The key within its section (`connect_timeout`).
    pub fn name(&self) -> &'static str {
        self.key.split_once('.').map_or(self.key, |(_, n)| n)
    }

    /// The value `c` has.
    pub fn get(&self, c: &C) -> Value {
        match self.field {
            Field::Ms { get, .. } => Value::Ms(get(c)),
            Field::Count { get, .. } => Value::Count(get(c)),
            Field::Choice { names, get, .. } => {
                Value::Name(names.get(get(c)).copied().unwrap_or("?"))
            }
        }
    }

    /// Sets the field; a value of another unit, or a name not among the choices, is refused.
    /// Bounds are checked by [`Setting::check`] (and [`Config::validate`]).
    pub fn set(&self, c: &mut C, v: Value) -> Result<(), ConfigError> {
        match (self.field, v) {
            (Field::Ms { set, .. }, Value::Ms(ms)) => set(c, ms),
            (Field::Count { set, .. }, Value::Count(n)) => set(c, n),
            (Field::Choice { names, set, .. }, Value::Name(n)) => {
                match names.iter().position(|&x| x == n) {
                    Some(i) => set(c, i),
                    None => return Err(self.bad_choice(n)),
                }
            }
            _ => {
                return Err(ConfigError::BadValue {
                    key: self.key.to_string(),
                    value: v.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The value as `pgha explain` shows it: `0.5 s`, `3`, `fence`.
    pub fn show(&self, c: &C) -> String {
        match self.get(c) {
            v @ Value::Ms(_) => format!("{v} s"),
            v => v.to_string(),
        }
    }

    /// `name = value`, as a line of a configuration file.
    pub fn toml_line(&self, v: Value) -> String {
        match v {
            Value::Name(n) => format!("{} = \"{n}\"", self.name()),
            v => format!("{} = {v}", self.name()),
        }
    }

    /// A duration given in seconds (a file's number), checked against one year and the
    /// setting's bounds.
    pub fn seconds(&self, secs: f64) -> Result<Value, ConfigError> {
        if !secs.is_finite() || !(0.0..=(YEAR_MS / 1000) as f64).contains(&secs) {
            return Err(ConfigError::NotSeconds {
                key: self.key,
                value: secs.to_string(),
            });
        }
        let v = Value::Ms((secs * 1000.0).round() as u64);
        self.check(v)?;
        Ok(v)
    }

    /// A count (a file's number), checked against the bounds.
    pub fn count(&self, n: u32) -> Result<Value, ConfigError> {
        let v = Value::Count(n);
        self.check(v)?;
        Ok(v)
    }

    /// A name (a file's string), one of the choices.
    pub fn choice(&self, name: &str) -> Result<Value, ConfigError> {
        match self.field {
            Field::Choice { names, .. } => names
                .iter()
                .find(|&&x| x == name)
                .map(|&x| Value::Name(x))
                .ok_or_else(|| self.bad_choice(name)),
            _ => Err(ConfigError::BadValue {
                key: self.key.to_string(),
                value: name.to_string(),
            }),
        }
    }

    /// A value given as text (`--set key=value`): seconds for a duration, fractions allowed.
    /// Text that is not a number of the setting's kind is a [`ConfigError::BadValue`].
    pub fn parse(&self, text: &str) -> Result<Value, ConfigError> {
        let t = text.trim();
        let bad = || ConfigError::BadValue {
            key: self.key.to_string(),
            value: text.to_string(),
        };
        match self.field {
            Field::Ms { .. } => self.seconds(t.parse().map_err(|_| bad())?),
            Field::Count { .. } => self.count(t.parse().map_err(|_| bad())?),
            Field::Choice { .. } => self.choice(t),
        }
    }

    /// Whether `v` lies within the bounds; the error names the key and the value.
    pub fn check(&self, v: Value) -> Result<(), ConfigError> {
        let n = match v {
            Value::Ms(ms) => ms,
            Value::Count(n) => u64::from(n),
            Value::Name(_) => return Ok(()),
        };
        if n < self.min || n > self.max {
            return Err(ConfigError::OutOfBounds {
                key: self.key,
                value: v.to_string(),
            });
        }
        Ok(())
    }

    /// The default for a configuration whose earlier settings are as in `c`.
    pub fn default_in(&self, c: &C) -> Value {
        match self.default {
            DefaultValue::Fixed(v) => v,
            DefaultValue::Derived { from, .. } => from(c),
        }
    }

    /// The default as docs/configuration.md states it: the value, or how it is derived.
    pub fn default_doc(&self) -> String {
        match self.default {
            DefaultValue::Fixed(v @ Value::Name(_)) => format!("`\"{v}\"`"),
            DefaultValue::Fixed(v) => v.to_string(),
            DefaultValue::Derived { doc, .. } => doc.to_string(),
        }
    }

    /// The type column of docs/configuration.md: `seconds`, `integer 1-64`, `string`.
    pub fn unit_doc(&self) -> String {
        match self.field {
            Field::Ms { .. } => "seconds".into(),
            Field::Count { .. } => format!("integer {}-{}", self.min, self.max),
            Field::Choice { .. } => "string".into(),
        }
    }

    /// What the bounds error says must hold.
    pub(crate) fn bounds_text(&self) -> String {
        match self.field {
            Field::Ms { .. } if self.min > 1 || self.max < YEAR_MS => format!(
                "must be between {} and {} seconds",
                Value::Ms(self.min),
                Value::Ms(self.max)
            ),
            Field::Ms { .. } if self.min > 0 => "must be greater than 0".into(),
            Field::Ms { .. } => "must be a number of seconds between 0 and one year".into(),
            Field::Count { .. } => format!("must be between {} and {}", self.min, self.max),
            Field::Choice { names, .. } => format!("expected {}", choices(names)),
        }
    }

    fn bad_choice(&self, name: &str) -> ConfigError {
        ConfigError::OutOfBounds {
            key: self.key,
            value: format!("{name:?}"),
        }
    }
}

/// `"a" or "b"`, `"a", "b" or "c"`.
fn choices(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

macro_rules! ms {
    ($f:ident) => {
        Field::Ms {
            get: |c| c.$f,
            set: |c, v| c.$f = v,
        }
    };
}

/// A two-way choice: the field `$f` of enum `$t`, named by the enum's `name()`.
macro_rules! choice {
    ($f:ident, $t:ident, $a:ident, $b:ident) => {
        Field::Choice {
            names: &[$t::$a.name(), $t::$b.name()],
            get: |c| match c.$f {
                $t::$a => 0,
                $t::$b => 1,
            },
            set: |c, i| c.$f = if i == 0 { $t::$a } else { $t::$b },
        }
    };
}

pub static GRACE: Setting = Setting {
    key: "replication.grace",
    field: ms!(grace_ms),
    min: 0,
    max: YEAR_MS,
    default: DefaultValue::Fixed(Value::Ms(15_000)),
    doc: "How long a node with data waits for a peer to report master before it leads.",
};

pub static GRACE_STAGGER: Setting = Setting {
    key: "replication.grace_stagger",
    field: ms!(grace_stagger_ms),
    min: 0,
    max: YEAR_MS,
    default: DefaultValue::Derived {
        from: |c| Value::Ms((c.grace_ms / 3).min(5_000)),
        doc: "`min(grace / 3, 5)`",
    },
    doc: "Added to grace once per index, so two nodes started together do not both lead.",
};

pub static CONNECT_TIMEOUT: Setting = Setting {
    key: "replication.connect_timeout",
    field: ms!(connect_timeout_ms),
    min: 1,
    max: YEAR_MS,
    default: DefaultValue::Fixed(Value::Ms(5_000)),
    doc: "The bound on one probe, connect to answer.",
};

pub static PSQL_ERROR_COUNT: Setting = Setting {
    key: "replication.psql_error_count",
    field: Field::Count {
        get: |c| c.psql_error_count,
        set: |c, v| c.psql_error_count = v,
    },
    min: 1,
    max: crate::config::MAX_ERROR_COUNT as u64,
    default: DefaultValue::Fixed(Value::Count(3)),
    doc: "Consecutive failed probes of the master before the replica promotes.",
};

pub static PROBE_INTERVAL: Setting = Setting {
    key: "replication.probe_interval",
    field: ms!(probe_interval_ms),
    min: 1,
    max: YEAR_MS,
    default: DefaultValue::Fixed(Value::Ms(1_000)),
    doc: "Time between the starts of two probes of one server.",
};

pub static TRANSITION_BOUND: Setting = Setting {
    key: "replication.transition_bound",
    field: ms!(transition_bound_ms),
    min: 0,
    max: YEAR_MS,
    default: DefaultValue::Fixed(Value::Ms(30_000)),
    doc: "How long \"starting up\" or \"shutting down\" is tolerated before it counts as a failure.",
};

pub static SPLIT_BRAIN: Setting = Setting {
    key: "replication.split_brain",
    field: choice!(
        split_brain,
        SplitBrainRule,
        BothStop,
        OlderTimelineStepsDown
    ),
    min: 0,
    max: 0,
    default: DefaultValue::Fixed(Value::Name(SplitBrainRule::OlderTimelineStepsDown.name())),
    doc: "What a master does when it sees another master.",
};

pub static MASTER_GIVE_UP: Setting = Setting {
    key: "replication.master_give_up",
    field: ms!(master_give_up_ms),
    min: 0,
    max: YEAR_MS,
    default: DefaultValue::Derived {
        from: |c| {
            Value::Ms(Config::default_master_give_up_ms(
                c.psql_error_count,
                c.connect_timeout_ms,
                c.probe_interval_ms,
            ))
        },
        doc: "`psql_error_count x connect_timeout - probe_interval - min(connect_timeout / 2, 2 s)`",
    },
    doc: "How long a master goes without a sign of life from its postgres (or, fencing, its replica) before it gives up.",
};

pub static ISOLATION: Setting = Setting {
    key: "replication.isolation",
    field: choice!(isolation, Isolation, Fence, KeepServing),
    min: 0,
    max: 0,
    default: DefaultValue::Fixed(Value::Name(Isolation::Fence.name())),
    doc: "What a two-node master does when its replica has not answered for master_give_up.",
};

/// The etcd-lease mode's lease TTL (issue 13). At least 2 s: etcd's smallest lease with its
/// default election timeout is 1.5 s, and it grants whole seconds, rounding a shorter TTL up.
/// At most an hour: a dead master's key outlives it by up to this much.
pub static ETCD_TTL: Setting<EtcdTimings> = Setting {
    key: "etcd.ttl",
    field: ms!(ttl_ms),
    min: 2_000,
    max: 3_600_000,
    default: DefaultValue::Fixed(Value::Ms(30_000)),
    doc: "The leader lease's time to live: how long the leader key outlives the master's last renewal.",
};

pub static ETCD_LOOP_WAIT: Setting<EtcdTimings> = Setting {
    key: "etcd.loop_wait",
    field: ms!(loop_wait_ms),
    min: 100,
    max: 3_600_000,
    default: DefaultValue::Fixed(Value::Ms(10_000)),
    doc: "Time between two renewals of the lease (and reads of the cluster's keys).",
};

pub static ETCD_RETRY_TIMEOUT: Setting<EtcdTimings> = Setting {
    key: "etcd.retry_timeout",
    field: ms!(retry_timeout_ms),
    min: 100,
    max: 3_600_000,
    default: DefaultValue::Fixed(Value::Ms(10_000)),
    doc: "The bound on one etcd request, over all endpoints tried in turn.",
};

/// The etcd mode's timings, `[etcd]`'s keys (issue 13), as the shell's parser reads them.
/// Patroni's defaults (30 / 10 / 10), which meet `loop_wait + 2 x retry_timeout <= ttl`
/// exactly: see [`EtcdTimings::validate`] and docs/configuration.md.
pub static ETCD_SETTINGS: [&Setting<EtcdTimings>; 3] =
    [&ETCD_TTL, &ETCD_LOOP_WAIT, &ETCD_RETRY_TIMEOUT];

/// What the bounds error of the setting with this key (in [`SETTINGS`] or
/// [`ETCD_SETTINGS`]) says must hold.
pub fn bounds_text(key: &str) -> Option<String> {
    match find(key) {
        Some(s) => Some(s.bounds_text()),
        None => ETCD_SETTINGS
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.bounds_text()),
    }
}

/// Sets every setting of `table` that `given` does not name to its default, in table order.
fn fill_defaults<C>(table: &[&Setting<C>], c: &mut C, given: impl Fn(&Setting<C>) -> bool) {
    for s in table {
        if !given(s) {
            let v = s.default_in(c);
            let _ = s.set(c, v);
        }
    }
}

/// Every setting with a configuration key, in the order of their defaults (a derived default
/// follows the settings it derives from).
pub static SETTINGS: [&Setting; 9] = [
    &GRACE,
    &GRACE_STAGGER,
    &CONNECT_TIMEOUT,
    &PSQL_ERROR_COUNT,
    &PROBE_INTERVAL,
    &TRANSITION_BOUND,
    &SPLIT_BRAIN,
    &MASTER_GIVE_UP,
    &ISOLATION,
];

/// The setting with this key (`replication.grace`).
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().copied().find(|s| s.key == key)
}

/// The fast profile of the simulator, the e2e tests and the demo: probes every 0.2 s, each
/// bounded by 0.5 s, three failures; a 3 s grace staggered by 1 s. Every other setting keeps
/// its default; `master_give_up` is derived (1.05 s).
pub static FAST: [(&Setting, Value); 5] = [
    (&GRACE, Value::Ms(3_000)),
    (&GRACE_STAGGER, Value::Ms(1_000)),
    (&CONNECT_TIMEOUT, Value::Ms(500)),
    (&PSQL_ERROR_COUNT, Value::Count(3)),
    (&PROBE_INTERVAL, Value::Ms(200)),
];

/// The fast profile as lines of a `[replication]` section (`grace = 3` ...).
pub fn fast_toml() -> String {
    FAST.iter().map(|(s, v)| s.toml_line(*v) + "\n").collect()
}

impl Config {
    /// This configuration with the [`FAST`] profile's timings, and the give-up they derive.
    pub fn fast(mut self) -> Config {
        for (s, v) in &FAST {
            // The profile's values are of their settings' units.
            let _ = s.set(&mut self, *v);
        }
        self.master_give_up_ms = MASTER_GIVE_UP.default_in(&self).ms();
        self
    }

    /// Sets every setting that `given` does not name to its default, in [`SETTINGS`] order.
    pub fn fill_defaults(&mut self, given: impl Fn(&Setting) -> bool) {
        fill_defaults(&SETTINGS, self, given);
    }
}

impl EtcdTimings {
    /// Sets every timing that `given` does not name to its default.
    pub fn fill_defaults(&mut self, given: impl Fn(&Setting<EtcdTimings>) -> bool) {
        fill_defaults(&ETCD_SETTINGS, self, given);
    }
}

impl Value {
    /// The milliseconds of a duration (0 for anything else).
    pub fn ms(self) -> u64 {
        match self {
            Value::Ms(ms) => ms,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_read_as_a_sentence() {
        assert_eq!(choices(&["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(choices(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
