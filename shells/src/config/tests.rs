//! The configuration parser's tests; [`sample`] is a two-node file other modules test with.

use std::path::{Path, PathBuf};

use pgha_core::{SplitBrainRule, Topology};

use super::secrets::{REDACTED, redact_conninfo};
use super::*;

/// A two-node configuration (db0 on 127.0.0.1:6432, db1 on :6433) in `dir`.
pub(crate) fn sample(dir: &Path) -> String {
    format!(
        r#"
[node]
name = "db0"
index = 0
data_dir = "{d}/db0"
host = "127.0.0.1"
port = 6432
api = "127.0.0.1:8008"

[[peers]]
name = "db1"
host = "127.0.0.1"
port = 6433
api = "127.0.0.1:8009"

[replication]
enabled = true
grace = 15
connect_timeout = 5
psql_error_count = 3
probe_interval = 0.2

[journal]
path = "{d}/db0.journal"
"#,
        d = dir.display()
    )
}

fn tmp() -> PathBuf {
    std::env::temp_dir()
}

#[test]
fn the_issue_example_parses_into_an_ha_pair() {
    let (c, warnings) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
    assert_eq!(c.core.topology, Topology::Ha);
    assert_eq!(c.core.peers[0].index, 1);
    assert_eq!(c.core.probe_interval_ms, 200);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn an_unknown_key_names_the_key_line_and_file() {
    let text = sample(&tmp()).replace("port = 6432", "port = 6432\nprot = 1");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("x.toml"), "{e}");
    assert!(e.contains("prot"), "{e}");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn a_wrong_type_and_a_missing_key_are_errors() {
    let text = sample(&tmp()).replace("port = 6432", "port = \"x\"");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("port"), "{e}");
    let text = sample(&tmp()).replace("name = \"db0\"", "");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("name"), "{e}");
}

#[test]
fn the_journal_keeps_thirty_days_or_a_gigabyte_by_default_and_zero_means_no_limit() {
    let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
    let r = c
        .journal_options
        .retention
        .expect("retention on by default");
    assert_eq!(r.max_age_ms, Some(30 * 86_400_000));
    assert_eq!(r.max_bytes, Some(1024 * 1_048_576));
    assert_eq!(c.journal_options.snapshot_every_ms, Some(3_600_000));
    let text = sample(&tmp()).replace(
        "[journal]",
        "[journal]\nretention_days = 0\nmax_size_mb = 0",
    );
    let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
    assert!(c.journal_options.retention.is_none());
    let text = sample(&tmp()).replace("[journal]", "[journal]\nmax_size_mb = -1");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(
        e.contains("journal.max_size_mb") && e.contains("x.toml"),
        "{e}"
    );
}

#[test]
fn a_port_clash_is_an_error() {
    let text = sample(&tmp()).replace("port = 6433", "port = 6432");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("port clash"), "{e}");
}

#[test]
fn an_empty_or_blank_host_is_refused_naming_the_key() {
    let text = sample(&tmp()).replacen("host = \"127.0.0.1\"", "host = \"\"", 1);
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("node.host") && e.contains("x.toml"), "{e}");
    let i = sample(&tmp()).rfind("host = \"127.0.0.1\"").unwrap();
    let mut text = sample(&tmp());
    text.replace_range(i..i + "host = \"127.0.0.1\"".len(), "host = \"  \"");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("peers[0].host"), "{e}");
}

#[test]
fn a_peer_with_the_nodes_own_index_is_refused() {
    let text = sample(&tmp()).replace("port = 6433", "port = 6433\nindex = 0");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("index 0") || e.contains("index"), "{e}");
}

#[test]
fn keep_discarded_defaults_to_one_copy_and_is_bounded() {
    let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
    assert_eq!(c.pg.keep_discarded, 1);
    let text = format!("{}\n[postgres]\nkeep_discarded = 0\n", sample(&tmp()));
    let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
    assert_eq!(c.pg.keep_discarded, 0);
    let text = format!("{}\n[postgres]\nkeep_discarded = 1000\n", sample(&tmp()));
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("postgres.keep_discarded"), "{e}");
}

#[test]
fn a_config_file_is_read_up_to_a_bound_and_a_device_that_never_ends_is_an_error() {
    let e = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(e.contains("/dev/zero") && e.contains("larger than"), "{e}");
}

fn token_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn the_token_file_must_be_private_regular_non_empty_and_small_and_errors_name_it() {
    let dir = std::env::temp_dir().join(format!("pgha-config-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = crate::testutil::RemoveOnDrop(dir.clone());
    let with = |p: &Path| sample(&tmp()) + &format!("\n[api]\ntoken_file = \"{}\"\n", p.display());
    let good = token_file(&dir, "good", "s3cret\n", 0o600);
    let (c, _) = parse(Path::new("x.toml"), &with(&good)).unwrap();
    assert_eq!(
        read_token(c.api.token_file.as_ref().unwrap()).unwrap(),
        "s3cret"
    );
    let cases = [
        (token_file(&dir, "open", "s3cret", 0o644), "chmod 600"),
        (token_file(&dir, "empty", "", 0o600), "empty"),
        (
            token_file(&dir, "big", &"x".repeat(5000), 0o600),
            "larger than",
        ),
        (dir.join("missing"), "No such file"),
        (dir.clone(), "not a regular file"),
    ];
    for (p, needle) in cases {
        let e = parse(Path::new("x.toml"), &with(&p))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api.token_file") && e.contains(p.to_str().unwrap()) && e.contains(needle),
            "{e}"
        );
    }
    let spaces = token_file(&dir, "spaces", "two words", 0o600);
    let e = read_token(&spaces).unwrap_err();
    assert!(
        e.contains("api.token_file") && e.contains("visible ASCII"),
        "{e}"
    );
    let blank = token_file(&dir, "blank", "  \n", 0o600);
    assert!(read_token(&blank).unwrap_err().contains("no token"));
}

#[test]
fn the_socket_defaults_beside_the_journal_and_a_path_too_long_for_a_socket_is_an_error() {
    let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
    assert_eq!(c.api.socket, sibling(&c.journal, "d").join("api.sock"));
    let long = format!("/tmp/{}/api.sock", "d".repeat(120));
    let text = sample(&tmp()) + &format!("\n[api]\nsocket = \"{long}\"\n");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("api.socket") && e.contains("shorter"), "{e}");
}

#[test]
fn secrets_never_reach_the_journal_text() {
    let text = sample(&tmp()).replace(
        "[journal]",
        "[postgres]\npassword = \"hunter2-pw\"\n\n[journal]",
    ) + "\n[pgbouncer]\nadmin = \"host=127.0.0.1 port=6432 user=pgb password='bouncer pw' dbname=pgbouncer\"\nini = \"/tmp/pgbouncer.ini\"\ndatabases = [\"app\"]\n";
    let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
    assert_eq!(c.pg.password.as_deref(), Some("hunter2-pw"));
    let j = &c.journal_text;
    assert!(
        !j.contains("hunter2-pw") && !j.contains("bouncer pw"),
        "{j}"
    );
    assert!(j.contains(REDACTED) && j.contains("user=pgb"), "{j}");
    // Still a configuration of the same node.
    let again: toml::Table = toml::from_str(j).unwrap();
    assert_eq!(again["node"]["name"].as_str(), Some("db0"));
    // Text without secrets is kept as written.
    let plain = sample(&tmp());
    let (c, _) = parse(Path::new("x.toml"), &plain).unwrap();
    assert_eq!(c.journal_text, plain);
    assert_eq!(
        redact_conninfo("postgresql://app:pa55@db:5432/app"),
        format!("postgresql://app:{REDACTED}@db:5432/app")
    );
    assert_eq!(
        redact_conninfo("password=x host=h"),
        format!("password='{REDACTED}' host=h")
    );
}

#[test]
fn a_short_connect_timeout_warns() {
    // Five probes, so the derived master_give_up (5 x 0.1 s - 0.2 s - 0.05 s) still
    // outlasts a probe interval.
    let text = sample(&tmp())
        .replace("connect_timeout = 5", "connect_timeout = 0.1")
        .replace("psql_error_count = 3", "psql_error_count = 5");
    let (_, w) = parse(Path::new("x.toml"), &text).unwrap();
    assert!(w.iter().any(|w| w.contains("connect_timeout")), "{w:?}");
}

#[test]
fn a_master_give_up_past_the_replicas_takeover_is_an_error_naming_the_file_and_the_keys() {
    let text = sample(&tmp()).replace(
        "probe_interval = 0.2",
        "probe_interval = 0.2\nmaster_give_up = 14",
    );
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    for key in [
        "x.toml",
        "replication.master_give_up = 14 s",
        "replication.probe_interval",
        "replication.psql_error_count",
        "replication.connect_timeout",
        "at most 12.8 s",
    ] {
        assert!(e.contains(key), "{key}: {e}");
    }
    // At the limit it is accepted.
    let text = sample(&tmp()).replace(
        "probe_interval = 0.2",
        "probe_interval = 0.2\nmaster_give_up = 12.8",
    );
    let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
    assert_eq!(c.core.master_give_up_ms, 12_800);
}

#[test]
fn a_master_give_up_within_one_probe_interval_is_an_error_saying_whether_it_was_set() {
    let text = sample(&tmp()).replace(
        "probe_interval = 0.2",
        "probe_interval = 0.2\nmaster_give_up = 0.2",
    );
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(
        e.contains("x.toml")
            && e.contains("replication.master_give_up = 0.2 s")
            && e.contains("replication.probe_interval = 0.2 s"),
        "{e}"
    );
    // Derived: 3 x 0.5 s - 1 s - 0.25 s = 0.25 s, within one probe interval of 1 s.
    let text = sample(&tmp())
        .replace("connect_timeout = 5", "connect_timeout = 0.5")
        .replace("probe_interval = 0.2", "probe_interval = 1");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(
        e.contains("x.toml") && e.contains("not set") && e.contains("0.25 s"),
        "{e}"
    );
}

#[test]
fn the_give_up_defaults_to_the_takeover_less_a_probe_interval_and_the_stop_allowance() {
    // 3 x 5 s - 0.2 s - 2 s; with the default probe_interval of 1 s, 12 s.
    let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
    assert_eq!(c.core.master_give_up_ms, 12_800);
    assert_eq!(c.core.isolation, pgha_core::Isolation::Fence);
    assert_eq!(c.core.split_brain, SplitBrainRule::OlderTimelineStepsDown);
    let text = sample(&tmp()).replace("probe_interval = 0.2", "probe_interval = 1");
    let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
    assert_eq!(c.core.master_give_up_ms, 12_000);
    let text = sample(&tmp()).replace(
        "probe_interval = 0.2",
        "probe_interval = 0.2\nisolation = \"fenced\"",
    );
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(
        e.contains("replication.isolation") && e.contains("x.toml"),
        "{e}"
    );
}

#[test]
fn the_start_up_notes_say_what_isolation_and_both_stop_trade_away() {
    let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
    let notes = tradeoffs(&c);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("a dead replica stops writes after master_give_up (12.8 s)"),
        "{notes:?}"
    );
    let text = sample(&tmp()).replace(
        "probe_interval = 0.2",
        "probe_interval = 0.2\nisolation = \"keep-serving\"\nsplit_brain = \"both-stop\"",
    );
    let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
    let notes = tradeoffs(&c).join("\n");
    assert!(
        notes.contains(
            "the isolated master acknowledges writes that are lost when the replica promotes"
        ) && notes.contains("15 s"),
        "{notes}"
    );
    assert!(
        notes.contains("both-stop")
            && notes.contains("races")
            && notes.contains("\"older-timeline-steps-down\" is the default"),
        "{notes}"
    );
}

#[test]
fn an_unknown_replication_key_names_the_key_its_line_and_the_settings() {
    let text = sample(&tmp()).replace("grace = 15", "grace = 15\ngrase = 1");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    for needle in ["x.toml", "grase", "line 19", "master_give_up", "enabled"] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let text = sample(&tmp()).replace("grace = 15", "grace = \"soon\"");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("line 18") && e.contains("invalid type"), "{e}");
    let text = sample(&tmp()).replace("enabled = true\n", "");
    let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
    assert!(e.contains("missing field `enabled`"), "{e}");
}

#[test]
fn a_replication_value_outside_its_bounds_is_refused_naming_the_key() {
    for (from, to, needle) in [
        (
            "connect_timeout = 5",
            "connect_timeout = -1",
            "replication.connect_timeout = -1: must be a number of seconds between 0 and one year",
        ),
        (
            "probe_interval = 0.2",
            "probe_interval = 0",
            "replication.probe_interval = 0: must be greater than 0",
        ),
        (
            "psql_error_count = 3",
            "psql_error_count = 65",
            "replication.psql_error_count = 65: must be between 1 and 64",
        ),
        (
            "probe_interval = 0.2",
            "probe_interval = 0.2\nsplit_brain = \"both\"",
            "replication.split_brain = \"both\": expected \"both-stop\" or \"older-timeline-steps-down\"",
        ),
    ] {
        let text = sample(&tmp()).replace(from, to);
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains(needle), "{e}");
    }
}
