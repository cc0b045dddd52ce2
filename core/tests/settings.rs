//! The settings tables: every tunable field of [`Config`] is in `SETTINGS` and round-trips,
//! bounds name the key, and docs/configuration.md's `[replication]` table agrees with it;
//! likewise the etcd mode's timings (issue 13) in `ETCD_SETTINGS`, their defaults, bounds,
//! the lease inequality and the `[etcd]` table.

use pgha_core::settings::{self, ETCD_SETTINGS, Field, SETTINGS, Setting, Value};
use pgha_core::{Config, ConfigError, EtcdTimings, Isolation, SplitBrainRule};

#[test]
fn every_field_with_a_configuration_key_is_in_the_table_and_round_trips() {
    let base = Config::ha_pair("db0", 0, "db1", 1);
    // Destructured field by field: a new field does not compile until it is sorted here.
    let Config {
        name: _,
        index: _,
        peers: _,
        topology: _, // replication.topology: derived by the shell from enabled and the peers
        grace_ms: _,
        grace_stagger_ms: _,
        connect_timeout_ms: _,
        psql_error_count: _,
        probe_interval_ms: _,
        transition_bound_ms: _,
        split_brain: _,
        master_give_up_ms: _,
        isolation: _,
        vip: _,   // a [vip] section
        proxy: _, // a [pgbouncer] section
        hooks: _, // hooks.on_role_change
    } = base.clone();
    let keyed = [
        "replication.grace",
        "replication.grace_stagger",
        "replication.connect_timeout",
        "replication.psql_error_count",
        "replication.probe_interval",
        "replication.transition_bound",
        "replication.split_brain",
        "replication.master_give_up",
        "replication.isolation",
    ];
    assert_eq!(SETTINGS.map(|s| s.key), keyed);
    round_trips(&SETTINGS, &base, |s, base| match s.field {
        Field::Ms { .. } => Value::Ms(s.get(base).ms() + 1_234),
        Field::Count { .. } => Value::Count(7),
        Field::Choice { names, .. } => Value::Name(
            names
                .iter()
                .find(|&&n| Value::Name(n) != s.get(base))
                .unwrap(),
        ),
    });
}

/// Each setting of `table`, set to `value(setting, base)` on a copy of `base`, reads back,
/// moves no other setting, and its text form parses back to the same value.
fn round_trips<C: Clone + 'static>(
    table: &[&Setting<C>],
    base: &C,
    value: impl Fn(&Setting<C>, &C) -> Value,
) {
    for s in table {
        let v = value(s, base);
        let mut c = base.clone();
        s.set(&mut c, v).unwrap();
        assert_eq!(s.get(&c), v, "{}", s.key);
        // Exactly one setting changed.
        for other in table.iter().filter(|o| o.key != s.key) {
            assert_eq!(
                other.get(&c),
                other.get(base),
                "{} moved {}",
                s.key,
                other.key
            );
        }
        // And its text form reads back the same.
        assert_eq!(s.parse(&v.to_string()).unwrap(), v, "{}", s.key);
    }
}

#[test]
fn a_value_outside_its_bounds_is_refused_naming_the_key() {
    let cases = [
        (
            "replication.psql_error_count",
            "0",
            "must be between 1 and 64",
        ),
        (
            "replication.psql_error_count",
            "65",
            "must be between 1 and 64",
        ),
        ("replication.connect_timeout", "0", "must be greater than 0"),
        ("replication.probe_interval", "0", "must be greater than 0"),
        ("replication.grace", "-1", "between 0 and one year"),
        (
            "replication.connect_timeout",
            "-1",
            "between 0 and one year",
        ),
        ("replication.grace", "31536001", "between 0 and one year"),
        (
            "replication.isolation",
            "fenced",
            "expected \"fence\" or \"keep-serving\"",
        ),
    ];
    for (key, value, needle) in cases {
        let mut c = Config::ha_pair("db0", 0, "db1", 1);
        let e = c.set(key, value).unwrap_err();
        assert!(
            matches!(e, ConfigError::OutOfBounds { key: k, .. } | ConfigError::NotSeconds { key: k, .. } if k == key),
            "{key}={value}: {e:?}"
        );
        let text = e.to_string();
        assert!(text.contains(key) && text.contains(needle), "{text}");
    }
    // A config built field by field is checked against the same bounds.
    let mut c = Config::ha_pair("db0", 0, "db1", 1);
    c.psql_error_count = 0;
    let e = c.validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "replication.psql_error_count = 0: must be between 1 and 64"
    );
}

#[test]
fn the_defaults_are_the_seed_releases_and_the_fast_profile_derives_its_give_up() {
    let c = Config::ha_pair("db0", 0, "db1", 1);
    assert_eq!(
        (
            c.grace_ms,
            c.grace_stagger_ms,
            c.connect_timeout_ms,
            c.psql_error_count,
            c.probe_interval_ms,
            c.transition_bound_ms,
            c.master_give_up_ms,
        ),
        (15_000, 5_000, 5_000, 3, 1_000, 30_000, 12_000)
    );
    assert_eq!(c.split_brain, SplitBrainRule::OlderTimelineStepsDown);
    assert_eq!(c.isolation, Isolation::Fence);
    let f = c.fast();
    assert_eq!(
        (
            f.grace_ms,
            f.grace_stagger_ms,
            f.connect_timeout_ms,
            f.probe_interval_ms,
            f.master_give_up_ms
        ),
        (3_000, 1_000, 500, 200, 1_050)
    );
    assert!(f.validate().unwrap().is_empty());
    assert_eq!(
        settings::fast_toml(),
        "grace = 3\ngrace_stagger = 1\nconnect_timeout = 0.5\npsql_error_count = 3\nprobe_interval = 0.2\n"
    );
}

#[test]
fn the_configuration_docs_list_every_setting_with_its_type_and_default() {
    let docs = include_str!("../../docs/configuration.md");
    for s in SETTINGS {
        let row = format!("| `{}` | {} | {}", s.name(), s.unit_doc(), s.default_doc());
        assert!(
            docs.lines().any(|l| l.starts_with(&row)),
            "docs/configuration.md has no row starting {row:?}"
        );
    }
}

#[test]
fn the_etcd_timings_default_to_patronis_which_meet_the_lease_inequality_exactly() {
    let t = EtcdTimings::default();
    assert_eq!(
        (t.ttl_ms, t.loop_wait_ms, t.retry_timeout_ms),
        (30_000, 10_000, 10_000)
    );
    assert_eq!(t.loop_wait_ms + 2 * t.retry_timeout_ms, t.ttl_ms);
    assert_eq!(t.validate(), Ok(()));
}

#[test]
fn every_etcd_timing_round_trips_through_the_table_and_moves_only_its_field() {
    assert_eq!(
        ETCD_SETTINGS.map(|s| s.key),
        ["etcd.ttl", "etcd.loop_wait", "etcd.retry_timeout"]
    );
    round_trips(&ETCD_SETTINGS, &EtcdTimings::default(), |s, base| {
        Value::Ms(s.get(base).ms() + 1_234)
    });
}

#[test]
fn the_lease_inequality_is_a_typed_error_naming_the_three_keys() {
    let t = EtcdTimings {
        ttl_ms: 30_000,
        loop_wait_ms: 10_000,
        retry_timeout_ms: 10_001,
    };
    let e = t.validate().unwrap_err();
    assert_eq!(
        e,
        ConfigError::EtcdLeaseTooShort {
            ttl_ms: 30_000,
            loop_wait_ms: 10_000,
            retry_timeout_ms: 10_001
        }
    );
    let text = e.to_string();
    assert!(
        text.starts_with(
            "etcd.loop_wait (10 s) + 2 x etcd.retry_timeout (2 x 10.001 s) = 30.002 s exceeds etcd.ttl (30 s)"
        ),
        "{text}"
    );
}

#[test]
fn an_etcd_timing_outside_its_bounds_is_refused_naming_the_key() {
    for (key, text, needle) in [
        (
            "etcd.ttl",
            "0",
            "etcd.ttl = 0: must be between 2 and 3600 seconds",
        ),
        (
            "etcd.ttl",
            "-1",
            "etcd.ttl = -1: must be a number of seconds between 0 and one year",
        ),
        (
            "etcd.loop_wait",
            "0.09",
            "etcd.loop_wait = 0.09: must be between 0.1 and 3600 seconds",
        ),
        (
            "etcd.retry_timeout",
            "3600.5",
            "etcd.retry_timeout = 3600.5: must be between 0.1 and 3600 seconds",
        ),
    ] {
        let s = ETCD_SETTINGS.iter().find(|s| s.key == key).unwrap();
        let e = s.parse(text).unwrap_err().to_string();
        assert_eq!(e, needle);
    }
    // A struct built field by field is checked against the same bounds.
    let t = EtcdTimings {
        ttl_ms: 1_000,
        ..EtcdTimings::default()
    };
    assert_eq!(
        t.validate().unwrap_err().to_string(),
        "etcd.ttl = 1: must be between 2 and 3600 seconds"
    );
}

#[test]
fn the_configuration_docs_list_every_etcd_timing_with_its_type_and_default() {
    let docs = include_str!("../../docs/configuration.md");
    for s in ETCD_SETTINGS {
        let row = format!("| `{}` | {} | {}", s.name(), s.unit_doc(), s.default_doc());
        assert!(
            docs.lines().any(|l| l.starts_with(&row)),
            "docs/configuration.md has no row starting {row:?}"
        );
    }
}
