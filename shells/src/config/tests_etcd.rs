//! `[etcd]` and the etcd mode's `[node]` keys (issue 13): every rule and every bad input.

use std::path::Path;

use pgha_core::Topology;

use super::tests::sample;
use super::*;

/// A node of an etcd-mode cluster: no `index`, no `[[peers]]`, an `[etcd]` section with
/// `extra` lines.
fn etcd_sample(extra: &str) -> String {
    let d = std::env::temp_dir();
    format!(
        r#"
[node]
name = "db0"
data_dir = "{d}/db0"
host = "127.0.0.1"
port = 6432
api = "127.0.0.1:8008"

[replication]
enabled = true

[journal]
path = "{d}/db0.journal"

[etcd]
endpoints = ["127.0.0.1:2379", "http://127.0.0.1:2380"]
cluster = "main"
{extra}
"#,
        d = d.display()
    )
}

fn parse_ok(text: &str) -> (FileConfig, Vec<String>) {
    parse(Path::new("x.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn parse_err(text: &str) -> String {
    let e = parse(Path::new("x.toml"), text)
        .map(|_| ())
        .expect_err(text)
        .to_string();
    assert!(e.starts_with("x.toml: "), "{e}");
    e
}

#[test]
fn an_etcd_section_takes_both_endpoint_forms_and_patronis_timings_by_default() {
    let (c, warnings) = parse_ok(&etcd_sample(""));
    let e = c.etcd.expect("etcd mode");
    assert_eq!(
        e.endpoints,
        [
            "127.0.0.1:2379".parse().unwrap(),
            "127.0.0.1:2380".parse().unwrap()
        ]
    );
    assert_eq!(e.prefix(), "/pgha/main/");
    assert_eq!(
        (
            e.timings.ttl_ms,
            e.timings.loop_wait_ms,
            e.timings.retry_timeout_ms
        ),
        (30_000, 10_000, 10_000)
    );
    assert_eq!(
        (e.primary_dc.as_str(), e.primary_dc_given),
        ("default", false)
    );
    assert_eq!(
        c.member,
        Member {
            dc: "default".into(),
            priority: 0,
            nofailover: false
        }
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn the_timings_take_fractions_and_the_node_keys_are_read() {
    let text = etcd_sample("ttl = 2.5\nloop_wait = 0.5\nretry_timeout = 1\nprimary_dc = \"east\"")
        .replace(
            "port = 6432",
            "port = 6432\ndc = \"west-2\"\npriority = -3\nnofailover = true",
        );
    let (c, warnings) = parse_ok(&text);
    let e = c.etcd.unwrap();
    assert_eq!(
        (
            e.timings.ttl_ms,
            e.timings.loop_wait_ms,
            e.timings.retry_timeout_ms
        ),
        (2_500, 500, 1_000)
    );
    assert_eq!(e.primary_dc, "east");
    assert_eq!(
        c.member,
        Member {
            dc: "west-2".into(),
            priority: -3,
            nofailover: true
        }
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn in_etcd_mode_index_and_peers_are_optional() {
    let (c, _) = parse_ok(&etcd_sample(""));
    assert_eq!(c.index, 0);
    assert!(c.peers.is_empty());
    assert!(c.core.peers.is_empty());
    // The two-node core never runs an etcd file; it stands in for this node alone.
    assert_eq!(c.core.topology, Topology::Standalone);
    // Peers and an index may still be given, and are checked as always.
    let text = etcd_sample("").replace("port = 6432", "port = 6432\nindex = 2")
        + "\n[[peers]]\nname = \"db1\"\nhost = \"127.0.0.1\"\nport = 6433\napi = \"127.0.0.1:8009\"\n";
    let (c, _) = parse_ok(&text);
    assert_eq!((c.index, c.core.peers[0].index), (2, 0));
    assert_eq!(c.core.topology, Topology::Ha);
    let clash = text.replace("port = 6433", "port = 6432");
    assert!(parse_err(&clash).contains("port clash"));
}

#[test]
fn without_etcd_the_index_is_required_as_before() {
    let text = sample(&std::env::temp_dir()).replace("index = 0\n", "");
    let e = parse_err(&text);
    assert_eq!(
        e,
        "x.toml: missing field `index` in [node]: the bootstrap order (0 inits the first \
         master); only the etcd mode ([etcd]) goes without it"
    );
    let (c, _) = parse_ok(&sample(&std::env::temp_dir()));
    assert!(c.etcd.is_none());
    assert_eq!(c.member.dc, "default");
}

#[test]
fn the_etcd_node_keys_are_refused_without_an_etcd_section() {
    for line in ["dc = \"east\"", "priority = 1", "nofailover = true"] {
        let text =
            sample(&std::env::temp_dir()).replace("port = 6432", &format!("port = 6432\n{line}"));
        let e = parse_err(&text);
        let key = line.split(' ').next().unwrap();
        assert_eq!(
            e,
            format!(
                "x.toml: node.{key} is a setting of the etcd mode and does nothing without an \
                 [etcd] section: remove it, or configure [etcd]"
            )
        );
    }
}

#[test]
fn an_unknown_etcd_key_names_the_key_its_line_and_the_keys_there_are() {
    let e = parse_err(&etcd_sample("tll = 30"));
    for needle in [
        "tll",
        "line 18",
        "ttl",
        "loop_wait",
        "retry_timeout",
        "primary_dc",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn every_timing_of_the_cores_etcd_table_is_a_key_of_the_etcd_section() {
    use pgha_core::settings::{ETCD_SETTINGS, Value};
    // ttl, loop_wait, retry_timeout, written by the table's names: 40 >= 2 + 2 x 3.
    let values = [40_000, 2_000, 3_000];
    let lines: Vec<String> = ETCD_SETTINGS
        .iter()
        .zip(values)
        .map(|(s, ms)| s.toml_line(Value::Ms(ms)))
        .collect();
    let (c, _) = parse_ok(&etcd_sample(&lines.join("\n")));
    let t = c.etcd.unwrap().timings;
    for (s, ms) in ETCD_SETTINGS.iter().zip(values) {
        assert_eq!(s.section(), "etcd");
        assert_eq!(s.get(&t), Value::Ms(ms), "{}", s.key);
    }
}

#[test]
fn the_endpoints_must_be_a_non_empty_list_of_distinct_http_members() {
    let with = |list: &str| {
        etcd_sample("").replace(
            "endpoints = [\"127.0.0.1:2379\", \"http://127.0.0.1:2380\"]",
            &format!("endpoints = {list}"),
        )
    };
    for (list, needle) in [
        ("[]", "etcd.endpoints = []: list at least one etcd member"),
        (
            "[\"127.0.0.1:2379\", \"https://127.0.0.1:2379\"]",
            "etcd.endpoints[1]: etcd endpoint \"https://127.0.0.1:2379\": https is not supported yet",
        ),
        (
            "[\"127.0.0.1\"]",
            "etcd.endpoints[0]: etcd endpoint \"127.0.0.1\"",
        ),
        (
            "[\"http://127.0.0.1:2379/v3\"]",
            "expected host:port or http://host:port",
        ),
        (
            "[\"127.0.0.1:2379\", \"http://127.0.0.1:2379\"]",
            "etcd.endpoints[1] = \"http://127.0.0.1:2379\" is etcd.endpoints[0] again",
        ),
        ("\"127.0.0.1:2379\"", "invalid type: string"),
    ] {
        let e = parse_err(&with(list));
        assert!(e.contains(needle), "{list}: {e}");
    }
    let e = parse_err(&etcd_sample("").replace(
        "endpoints = [\"127.0.0.1:2379\", \"http://127.0.0.1:2380\"]\n",
        "",
    ));
    assert!(e.contains("missing field `endpoints`"), "{e}");
}

#[test]
fn a_cluster_or_dc_name_outside_a_conservative_charset_is_refused_naming_the_key() {
    let long = "a".repeat(65);
    let fine = "A-z_0.9".to_string() + &"a".repeat(57);
    assert_eq!(fine.len(), 64);
    for name in [
        "",
        "a/b",
        "..",
        ".",
        "two words",
        "été",
        "a\"b",
        long.as_str(),
    ] {
        let text = etcd_sample("").replace("cluster = \"main\"", &format!("cluster = {name:?}"));
        let e = parse_err(&text);
        assert!(
            e.contains(&format!(
                "etcd.cluster = {name:?}: expected 1 to 64 characters"
            )),
            "{e}"
        );
        let text = etcd_sample(&format!("primary_dc = {name:?}"));
        assert!(parse_err(&text).contains("etcd.primary_dc = "), "{name}");
        let text = etcd_sample("").replace("port = 6432", &format!("port = 6432\ndc = {name:?}"));
        assert!(parse_err(&text).contains("node.dc = "), "{name}");
    }
    let text = etcd_sample("").replace("cluster = \"main\"", &format!("cluster = {fine:?}"));
    assert_eq!(parse_ok(&text).0.etcd.unwrap().cluster, fine);
    let e = parse_err(&etcd_sample("").replace("cluster = \"main\"\n", ""));
    assert!(e.contains("missing field `cluster`"), "{e}");
}

#[test]
fn the_lease_inequality_names_the_three_keys_and_their_values() {
    let e = parse_err(&etcd_sample("loop_wait = 10\nretry_timeout = 12"));
    assert!(
        e.contains(
            "etcd.loop_wait (10 s) + 2 x etcd.retry_timeout (2 x 12 s) = 34 s exceeds etcd.ttl (30 s)"
        ),
        "{e}"
    );
    let e = parse_err(&etcd_sample("ttl = 2\nloop_wait = 0.5"));
    assert!(
        e.contains("etcd.ttl (2 s)") && e.contains("= 20.5 s"),
        "{e}"
    );
    // Exactly at the bound is accepted.
    let (c, _) = parse_ok(&etcd_sample(
        "ttl = 2\nloop_wait = 0.5\nretry_timeout = 0.75",
    ));
    assert_eq!(c.etcd.unwrap().timings.retry_timeout_ms, 750);
}

#[test]
fn a_zero_negative_or_too_short_ttl_is_refused_naming_the_key_and_the_bounds() {
    for (line, needle) in [
        (
            "ttl = 0",
            "etcd.ttl = 0: must be between 2 and 3600 seconds",
        ),
        (
            "ttl = 1.5",
            "etcd.ttl = 1.5: must be between 2 and 3600 seconds",
        ),
        (
            "ttl = 3601",
            "etcd.ttl = 3601: must be between 2 and 3600 seconds",
        ),
        (
            "ttl = -30",
            "etcd.ttl = -30: must be a number of seconds between 0 and one year",
        ),
        ("ttl = nan", "etcd.ttl = NaN: must be a number of seconds"),
        (
            "loop_wait = 0",
            "etcd.loop_wait = 0: must be between 0.1 and 3600 seconds",
        ),
        (
            "retry_timeout = -1",
            "etcd.retry_timeout = -1: must be a number of seconds",
        ),
        (
            "retry_timeout = 0.05",
            "etcd.retry_timeout = 0.05: must be between 0.1 and 3600 seconds",
        ),
    ] {
        let e = parse_err(&etcd_sample(line));
        assert!(e.contains(needle), "{line}: {e}");
    }
}

#[test]
fn wrong_types_in_the_etcd_keys_are_errors_naming_the_key() {
    for (from, to, key) in [
        (
            "cluster = \"main\"",
            "cluster = \"main\"\nttl = \"30\"",
            "ttl",
        ),
        ("cluster = \"main\"", "cluster = 5", "cluster"),
        (
            "cluster = \"main\"",
            "cluster = \"main\"\nprimary_dc = 1",
            "primary_dc",
        ),
        (
            "port = 6432",
            "port = 6432\nnofailover = \"yes\"",
            "nofailover",
        ),
        ("port = 6432", "port = 6432\npriority = 1.5", "priority"),
        (
            "port = 6432",
            "port = 6432\npriority = 3000000000",
            "priority",
        ),
        ("port = 6432", "port = 6432\ndc = [\"east\"]", "dc"),
    ] {
        let e = parse_err(&etcd_sample("").replace(from, to));
        assert!(e.contains(key) && e.contains("line"), "{to}: {e}");
    }
}

#[test]
fn the_etcd_mode_needs_replication_enabled() {
    let text = etcd_sample("").replace("enabled = true", "enabled = false");
    let e = parse_err(&text);
    assert!(
        e.contains("replication.enabled = false with an [etcd] section"),
        "{e}"
    );
}

#[test]
fn a_defaulted_primary_dc_that_is_not_this_nodes_dc_warns() {
    let text = etcd_sample("").replace("port = 6432", "port = 6432\ndc = \"east\"");
    let (_, warnings) = parse_ok(&text);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "etcd.primary_dc is not set (default \"default\") but node.dc = \"east\": a cluster \
         bootstrapped by this node would let no replica outside data centre \"default\" take over"
    );
    let (_, warnings) = parse_ok(&(text.clone() + "primary_dc = \"west\"\n"));
    assert!(warnings.is_empty(), "{warnings:?}");
}
