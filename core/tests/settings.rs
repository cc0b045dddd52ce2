//! The settings table: every tunable field of [`Config`] is in it and round-trips, bounds
//! name the key, and docs/configuration.md's `[replication]` table agrees with it.

use pgha_core::settings::{self, Field, SETTINGS, Value};
use pgha_core::{Config, ConfigError, Isolation, SplitBrainRule};

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
    for s in SETTINGS {
        let v = match s.field {
            Field::Ms { .. } => Value::Ms(s.get(&base).ms() + 1_234),
            Field::Count { .. } => Value::Count(7),
            Field::Choice { names, .. } => Value::Name(
                names
                    .iter()
                    .find(|&&n| Value::Name(n) != s.get(&base))
                    .unwrap(),
            ),
        };
        let mut c = base.clone();
        s.set(&mut c, v).unwrap();
        assert_eq!(s.get(&c), v, "{}", s.key);
        // Exactly one setting changed.
        for other in SETTINGS.iter().filter(|o| o.key != s.key) {
            assert_eq!(
                other.get(&c),
                other.get(&base),
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
