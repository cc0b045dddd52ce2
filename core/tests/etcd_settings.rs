//! The etcd mode's timings (issue 13): their table, defaults, bounds, the lease inequality,
//! and docs/configuration.md's `[etcd]` table.

use pgha_core::settings::{ETCD_SETTINGS, Value};
use pgha_core::{ConfigError, EtcdTimings};

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
    let base = EtcdTimings::default();
    for s in ETCD_SETTINGS {
        let v = Value::Ms(s.get(&base).ms() + 1_234);
        let mut t = base;
        s.set(&mut t, v).unwrap();
        assert_eq!(s.get(&t), v, "{}", s.key);
        for other in ETCD_SETTINGS.iter().filter(|o| o.key != s.key) {
            assert_eq!(
                other.get(&t),
                other.get(&base),
                "{} moved {}",
                s.key,
                other.key
            );
        }
        assert_eq!(s.parse(&v.to_string()).unwrap(), v, "{}", s.key);
    }
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
