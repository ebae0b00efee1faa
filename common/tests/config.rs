//! Tests of the cluster configuration: the shipped file, every default, every
//! validation error (asserting the message: file, key path, reason), limits
//! at and one past their value, and how a node finds its settings.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use opticache_common::config::{
    CONFIG_FILE_BYTES_MAX, FAILOVER_AFTER_MS_DEFAULT, HEARTBEAT_INTERVAL_MS_DEFAULT, HEARTBEAT_MISSES_DEFAULT,
    MAX_VALUE_BYTES_DEFAULT, MAX_VALUE_BYTES_LIMIT, METRICS_PORT_OFFSET, REPLICATION_FACTOR_DEFAULT,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SHARDS_DEFAULT, SHARDS_MAX,
    SHARD_DISK_BUDGET_BYTES_DEFAULT, SHARD_MEMORY_BUDGET_BYTES_DEFAULT, SYNC_INTERVAL_MS_DEFAULT, WRITE_QUORUM_DEFAULT,
};
use opticache_common::{
    CacheNodeConfig, ClusterConfig, ConfigError, CoordinatorConfig, DiskFullPolicy, Durability, HostPort, NodeDefaults,
    NodeSettings, SecurityConfig,
};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/config.yaml");
const ORIGIN: &str = "config/config.yaml";

/// A valid three-node file without optional keys; tests append to it.
const THREE_NODES: &str = "\
coordinator:
  primary: 127.0.0.1:50051
cache_nodes:
  - address: 127.0.0.1:6001
    disk_path: ./data/cache1
  - address: 127.0.0.1:6002
    disk_path: ./data/cache2
  - address: 127.0.0.1:6003
    disk_path: ./data/cache3
";

/// A valid one-node file (replication_factor must then be 1).
const ONE_NODE: &str = "\
coordinator:
  primary: 127.0.0.1:50051
cache_nodes:
  - address: 127.0.0.1:6001
    disk_path: ./data/cache1
replication_factor: 1
";

fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
    ClusterConfig::parse(text, Path::new(ORIGIN))
}

fn parse_ok(text: &str) -> ClusterConfig {
    match parse(text) {
        Ok(config) => config,
        Err(error) => panic!("expected a valid config, got: {error}\n{text}"),
    }
}

/// The message of the error `text` must produce.
fn error_message(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, parsed: {config:?}\n{text}"),
        Err(error) => error.to_string(),
    }
}

/// THREE_NODES with a `node:` section holding `lines` (each "key: value").
fn with_node(lines: &[&str]) -> String {
    let mut text = format!("{THREE_NODES}node:\n");
    for line in lines {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

fn address(text: &str) -> HostPort {
    text.parse().unwrap()
}

fn default_node() -> NodeDefaults {
    NodeDefaults {
        shards: 0,
        durability: Durability::Sync,
        shard_memory_budget_bytes: 256 << 20,
        shard_disk_budget_bytes: 0,
        disk_full_policy: DiskFullPolicy::Store,
        max_value_bytes: 64 << 20,
        segment_bytes: 256 << 20,
        prefill_segments: false,
    }
}

// ---- the shipped file ----

#[test]
fn shipped_config_parses_to_the_local_cluster() {
    let config = ClusterConfig::load(Path::new(SHIPPED)).unwrap();
    let node = |port: u16, disk: &str| CacheNodeConfig {
        address: address(&format!("127.0.0.1:{port}")),
        disk_path: PathBuf::from(disk),
        metrics_address: address(&format!("127.0.0.1:{}", port + 1000)),
        shards: None,
    };
    let expected = ClusterConfig {
        file: PathBuf::from(SHIPPED),
        coordinator: CoordinatorConfig {
            primary: address("127.0.0.1:50051"),
            secondary: Some(address("127.0.0.1:50052")),
            failover_after_ms: 1000,
        },
        cache_nodes: vec![node(6001, "./data/cache1"), node(6002, "./data/cache2"), node(6003, "./data/cache3")],
        replication_factor: 2,
        write_quorum: 1,
        heartbeat_interval_ms: 200,
        heartbeat_misses: 3,
        node: NodeDefaults { shards: 2, ..default_node() },
        security: SecurityConfig::default(),
    };
    assert_eq!(config, expected);
}

#[test]
fn shipped_config_spells_out_every_node_default_but_shards() {
    // The file documents the defaults: if a default changes, the file must follow.
    let shipped = ClusterConfig::load(Path::new(SHIPPED)).unwrap();
    assert_eq!(NodeDefaults { shards: SHARDS_DEFAULT, ..shipped.node }, parse_ok(THREE_NODES).node);
}

// ---- defaults ----

#[test]
fn every_default_is_filled_in() {
    let config = parse_ok(THREE_NODES);
    assert_eq!(config.file, PathBuf::from(ORIGIN));
    assert_eq!(config.coordinator.secondary, None);
    assert_eq!(config.coordinator.failover_after_ms, 1000);
    assert_eq!(config.replication_factor, 2);
    assert_eq!(config.write_quorum, 1);
    assert_eq!(config.heartbeat_interval_ms, 200);
    assert_eq!(config.heartbeat_misses, 3);
    assert_eq!(config.node, default_node());
    for (index, node) in config.cache_nodes.iter().enumerate() {
        let port = 6001 + index as u16;
        assert_eq!(node.metrics_address, address(&format!("127.0.0.1:{}", port + 1000)));
        assert_eq!(node.shards, None);
    }
}

#[test]
fn default_constants_have_the_documented_values() {
    assert_eq!(FAILOVER_AFTER_MS_DEFAULT, 1000);
    assert_eq!(REPLICATION_FACTOR_DEFAULT, 2);
    assert_eq!(WRITE_QUORUM_DEFAULT, 1);
    assert_eq!(HEARTBEAT_INTERVAL_MS_DEFAULT, 200);
    assert_eq!(HEARTBEAT_MISSES_DEFAULT, 3);
    assert_eq!(SHARDS_DEFAULT, 0);
    assert_eq!(SHARDS_MAX, 256);
    assert_eq!(SYNC_INTERVAL_MS_DEFAULT, 10);
    assert_eq!(SHARD_MEMORY_BUDGET_BYTES_DEFAULT, 256 << 20);
    assert_eq!(SHARD_DISK_BUDGET_BYTES_DEFAULT, 0);
    assert_eq!(MAX_VALUE_BYTES_DEFAULT, 64 << 20);
    assert_eq!(MAX_VALUE_BYTES_LIMIT, 256 << 20);
    assert_eq!(SEGMENT_BYTES_DEFAULT, 256 << 20);
    assert_eq!(SEGMENT_BYTES_MIN, 1 << 20);
    assert_eq!(SEGMENT_BYTES_MAX, 1 << 30);
    assert_eq!(METRICS_PORT_OFFSET, 1000);
}

#[test]
fn an_empty_node_section_means_all_defaults() {
    assert_eq!(parse_ok(&format!("{THREE_NODES}node:\n")).node, default_node());
    assert_eq!(parse_ok(&format!("{THREE_NODES}node: {{}}\n")).node, default_node());
}

#[test]
fn optional_keys_are_read_when_present() {
    let text = "\
coordinator:
  primary: coord-a.example:50051
  secondary: '[::1]:50052'
  failover_after_ms: 1500
cache_nodes:
  - address: 127.0.0.1:6001
    disk_path: /var/lib/opticache
    metrics_address: 0.0.0.0:9100
    shards: 4
replication_factor: 1
write_quorum: 1
heartbeat_interval_ms: 50
heartbeat_misses: 5
node:
  shards: 8
  durability: interval
  sync_interval_ms: 25
  shard_memory_budget_bytes: 1GiB
  shard_disk_budget_bytes: 1 TiB
  disk_full_policy: cache
  max_value_bytes: '512'
  segment_bytes: 4194304
  prefill_segments: true
";
    let config = parse_ok(text);
    assert_eq!(
        config.coordinator,
        CoordinatorConfig {
            primary: address("coord-a.example:50051"),
            secondary: Some(address("[::1]:50052")),
            failover_after_ms: 1500,
        }
    );
    assert_eq!(
        config.cache_nodes,
        vec![CacheNodeConfig {
            address: address("127.0.0.1:6001"),
            disk_path: PathBuf::from("/var/lib/opticache"),
            metrics_address: address("0.0.0.0:9100"),
            shards: Some(4),
        }]
    );
    assert_eq!((config.replication_factor, config.write_quorum), (1, 1));
    assert_eq!((config.heartbeat_interval_ms, config.heartbeat_misses), (50, 5));
    assert_eq!(
        config.node,
        NodeDefaults {
            shards: 8,
            durability: Durability::Interval { interval_ms: 25 },
            shard_memory_budget_bytes: 1 << 30,
            shard_disk_budget_bytes: 1 << 40,
            disk_full_policy: DiskFullPolicy::Cache,
            max_value_bytes: 512,
            segment_bytes: 4 << 20,
            prefill_segments: true,
        }
    );
}

#[test]
fn durability_none_ignores_the_interval() {
    let config = parse_ok(&with_node(&["durability: none", "sync_interval_ms: 99"]));
    assert_eq!(config.node.durability, Durability::None);
    assert_eq!(parse_ok(&with_node(&["durability: sync"])).node.durability, Durability::Sync);
    assert_eq!(
        parse_ok(&with_node(&["durability: interval"])).node.durability,
        Durability::Interval { interval_ms: SYNC_INTERVAL_MS_DEFAULT }
    );
}

#[test]
fn byte_sizes_accept_integers_and_binary_units() {
    let cases: [(&str, u64); 7] = [
        ("512", 512),
        ("'512'", 512),
        ("512B", 512),
        ("4KiB", 4 << 10),
        ("256MiB", 256 << 20),
        ("\"256 MiB\"", 256 << 20),
        ("1GiB", 1 << 30),
    ];
    for (written, bytes) in cases {
        let config = parse_ok(&with_node(&[&format!("shard_memory_budget_bytes: {written}")]));
        assert_eq!(config.node.shard_memory_budget_bytes, bytes, "{written}");
    }
}

// ---- reading the file ----

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, ONE_NODE).unwrap();
    let config = ClusterConfig::load(&path).unwrap();
    assert_eq!(config.file, path);
    assert_eq!(config.cache_nodes.len(), 1);

    std::fs::write(&path, format!("{ONE_NODE}write_quorum: 2\n")).unwrap();
    let error = ClusterConfig::load(&path).unwrap_err();
    assert_eq!(error.file(), path);
    assert_eq!(error.to_string(), format!("{}: write_quorum: 2 is more than replication_factor 1", path.display()));
}

#[test]
fn a_missing_file_reports_the_os_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let error = ClusterConfig::load(&path).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("{}: cannot read the configuration file: No such file or directory (os error 2)", path.display())
    );
}

#[test]
fn a_directory_is_not_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = ClusterConfig::load(dir.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: cannot read the configuration file: Is a directory (os error 21)", dir.path().display())
    );
}

#[test]
fn files_over_the_size_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    // Exactly at the limit is read (a comment pads it); one byte more is refused.
    let padding = CONFIG_FILE_BYTES_MAX as usize - ONE_NODE.len() - 2;
    let at_limit = format!("{ONE_NODE}#{}\n", "x".repeat(padding));
    assert_eq!(at_limit.len() as u64, CONFIG_FILE_BYTES_MAX);
    std::fs::write(&path, &at_limit).unwrap();
    assert_eq!(ClusterConfig::load(&path).unwrap().cache_nodes.len(), 1);

    std::fs::write(&path, format!("{at_limit} ")).unwrap();
    let error = ClusterConfig::load(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: the file is more than 1048576 bytes, too large for a configuration file", path.display())
    );
}

#[test]
fn non_utf8_files_are_refused_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(&path, b"coordinator:\n  primary: caf\xe9:1\n").unwrap();
    let error = ClusterConfig::load(&path).unwrap_err();
    assert_eq!(error.to_string(), format!("{}: the file is not UTF-8 (invalid byte at offset 27)", path.display()));
}

// ---- YAML syntax ----

#[test]
fn syntax_errors_give_line_and_column() {
    let text = "coordinator:\n  primary: 127.0.0.1:50051\n bad: indent\n";
    let error = parse(text).unwrap_err();
    assert!(matches!(error, ConfigError::Syntax { location: Some((3, 2)), .. }), "{error:?}");
    assert!(error.to_string().starts_with("config/config.yaml:3:2: "), "{error}");
}

#[test]
fn an_empty_file_says_what_is_required() {
    for text in ["", "# only a comment\n"] {
        assert_eq!(
            error_message(text),
            "config/config.yaml: the file holds no settings (coordinator and cache_nodes are required)"
        );
    }
}

#[test]
fn a_file_that_is_not_a_mapping_is_refused() {
    assert_eq!(error_message("hello\n"), "config/config.yaml:1:1: expected a mapping (key: value lines)");
    assert_eq!(error_message("- 1\n"), "config/config.yaml:1:1: expected a mapping (key: value lines)");
}

#[test]
fn a_second_document_is_refused() {
    let error = error_message(&format!("{ONE_NODE}---\n{ONE_NODE}"));
    assert_eq!(error, "config/config.yaml:8:1: only single YAML document expected but multiple found");
}

#[test]
fn a_key_written_twice_is_refused() {
    assert_eq!(
        error_message(&with_node(&["shards: 1", "shards: 2"])),
        "config/config.yaml: node.shards: appears twice"
    );
}

// ---- unknown and missing keys ----

#[test]
fn unknown_keys_are_named_with_the_expected_ones() {
    assert_eq!(
        error_message(&with_node(&["bogus: 1"])),
        "config/config.yaml: node.bogus: unknown key (expected one of shards, durability, sync_interval_ms, \
         shard_memory_budget_bytes, shard_disk_budget_bytes, disk_full_policy, max_value_bytes, segment_bytes, \
         prefill_segments)"
    );
    assert_eq!(
        error_message(&format!("{THREE_NODES}replication: 2\n")),
        "config/config.yaml: replication: unknown key (expected one of coordinator, cache_nodes, \
         replication_factor, write_quorum, heartbeat_interval_ms, heartbeat_misses, node, security)"
    );
    assert_eq!(
        error_message(
            &THREE_NODES.replace("  primary: 127.0.0.1:50051\n", "  primary: 127.0.0.1:50051\n  tertiary: x\n")
        ),
        "config/config.yaml: coordinator.tertiary: unknown key (expected one of primary, secondary, failover_after_ms)"
    );
    let error =
        parse(&THREE_NODES.replace("disk_path: ./data/cache2\n", "disk_path: ./data/cache2\n    diskpath: x\n"))
            .unwrap_err();
    assert_eq!(error.key(), Some("cache_nodes[1].diskpath"));
    assert_eq!(
        error.to_string(),
        "config/config.yaml: cache_nodes[1].diskpath: unknown key (expected one of address, disk_path, \
         metrics_address, shards)"
    );
}

#[test]
fn missing_required_keys_are_named() {
    assert_eq!(
        error_message("cache_nodes:\n  - address: 127.0.0.1:6001\n    disk_path: d\n"),
        "config/config.yaml: coordinator: missing (this key is required)"
    );
    assert_eq!(
        error_message("coordinator:\n  secondary: 127.0.0.1:50052\ncache_nodes: []\n"),
        "config/config.yaml: coordinator.primary: missing (this key is required)"
    );
    assert_eq!(
        error_message("coordinator:\n  primary: 127.0.0.1:50051\n"),
        "config/config.yaml: cache_nodes: missing (this key is required)"
    );
    assert_eq!(
        error_message(&THREE_NODES.replace("    disk_path: ./data/cache2\n", "")),
        "config/config.yaml: cache_nodes[1].disk_path: missing (this key is required)"
    );
    assert_eq!(
        error_message(&THREE_NODES.replace("  - address: 127.0.0.1:6003\n    disk_path", "  - disk_path")),
        "config/config.yaml: cache_nodes[2].address: missing (this key is required)"
    );
}

// ---- values of the wrong type ----

#[test]
fn wrongly_typed_values_name_the_key() {
    assert_eq!(
        error_message(&with_node(&["shards: many"])),
        "config/config.yaml: node.shards: expected a whole number from 0 to 4294967295"
    );
    assert_eq!(
        error_message(&with_node(&["shards: -1"])),
        "config/config.yaml: node.shards: expected a whole number from 0 to 4294967295"
    );
    assert_eq!(
        error_message(&format!("{THREE_NODES}heartbeat_interval_ms: soon\n")),
        "config/config.yaml: heartbeat_interval_ms: expected a whole number from 0 to 18446744073709551615"
    );
    assert_eq!(
        error_message(&with_node(&["durability: fast"])),
        "config/config.yaml: node.durability: \"fast\" is not one of sync, interval, none"
    );
    assert_eq!(
        error_message(&with_node(&["disk_full_policy: evict"])),
        "config/config.yaml: node.disk_full_policy: \"evict\" is not one of store, cache"
    );
    assert_eq!(
        error_message("coordinator:\n  primary: 127.0.0.1:50051\ncache_nodes: all\n"),
        "config/config.yaml: cache_nodes: expected a list"
    );
}

#[test]
fn sizes_that_are_not_sizes_are_refused_naming_the_units() {
    for (written, shown) in [("1GB", "\"1GB\""), ("lots", "\"lots\""), ("-1", "-1"), ("'-1'", "\"-1\""), ("1.5", "1.5")]
    {
        assert_eq!(
            error_message(&with_node(&[&format!("max_value_bytes: {written}")])),
            format!("config/config.yaml: node.max_value_bytes: {shown} is not a size (use B, KiB, MiB, GiB or TiB)"),
            "{written}"
        );
    }
}

// ---- addresses ----

#[test]
fn malformed_addresses_are_refused_with_the_reason() {
    let replace = |from: &str, to: &str| error_message(&THREE_NODES.replacen(from, to, 1));
    assert_eq!(
        replace("127.0.0.1:50051", "127.0.0.1"),
        "config/config.yaml: coordinator.primary: \"127.0.0.1\" is not host:port (no ':port')"
    );
    assert_eq!(
        replace("127.0.0.1:6002", "127.0.0.1:65536"),
        "config/config.yaml: cache_nodes[1].address: \"127.0.0.1:65536\" is not host:port (the port is more than 65535)"
    );
    assert_eq!(
        replace("127.0.0.1:6003", "'::1:6003'"),
        "config/config.yaml: cache_nodes[2].address: \"::1:6003\" is not host:port \
         (write an IPv6 address in brackets, as in [::1]:6001)"
    );
}

#[test]
fn ipv6_and_hostnames_are_accepted() {
    let text =
        THREE_NODES.replacen("127.0.0.1:6001", "'[::1]:6001'", 1).replacen("127.0.0.1:6002", "cache-2.local:6002", 1);
    let config = parse_ok(&text);
    assert_eq!(config.cache_nodes[0].address.host(), "::1");
    assert_eq!(config.cache_nodes[0].metrics_address.to_string(), "[::1]:7001");
    assert_eq!(config.cache_nodes[1].metrics_address.to_string(), "cache-2.local:7002");
}

#[test]
fn coordinator_primary_and_secondary_must_differ() {
    let text = THREE_NODES
        .replace("  primary: 127.0.0.1:50051\n", "  primary: 127.0.0.1:50051\n  secondary: 127.0.0.1:50051\n");
    assert_eq!(
        error_message(&text),
        "config/config.yaml: coordinator.secondary: 127.0.0.1:50051 is already used by coordinator.primary"
    );
}

#[test]
fn node_addresses_must_be_distinct() {
    assert_eq!(
        error_message(&THREE_NODES.replace("127.0.0.1:6003", "127.0.0.1:6001")),
        "config/config.yaml: cache_nodes[2].address: 127.0.0.1:6001 is already used by cache_nodes[0].address"
    );
    // A node may not listen where a coordinator does, nor on another node's metrics port.
    assert_eq!(
        error_message(&THREE_NODES.replace("127.0.0.1:6002", "127.0.0.1:50051")),
        "config/config.yaml: cache_nodes[1].address: 127.0.0.1:50051 is already used by coordinator.primary"
    );
    assert_eq!(
        error_message(&THREE_NODES.replace("127.0.0.1:6003", "127.0.0.1:7001")),
        "config/config.yaml: cache_nodes[2].address: 127.0.0.1:7001 is already used by cache_nodes[0].metrics_address"
    );
    let explicit_metrics = THREE_NODES
        .replace("disk_path: ./data/cache2\n", "disk_path: ./data/cache2\n    metrics_address: 127.0.0.1:6003\n");
    assert_eq!(
        error_message(&explicit_metrics),
        "config/config.yaml: cache_nodes[2].address: 127.0.0.1:6003 is already used by cache_nodes[1].metrics_address"
    );
}

#[test]
fn a_metrics_port_past_65535_must_be_configured() {
    let high = THREE_NODES.replace("127.0.0.1:6003", "127.0.0.1:65000");
    assert_eq!(
        error_message(&high),
        "config/config.yaml: cache_nodes[2].metrics_address: the default (port 65000 + 1000) is more than 65535; \
         set metrics_address"
    );
    let fixed =
        high.replace("disk_path: ./data/cache3\n", "disk_path: ./data/cache3\n    metrics_address: 127.0.0.1:65001\n");
    assert_eq!(parse_ok(&fixed).cache_nodes[2].metrics_address, address("127.0.0.1:65001"));
    // The last port that still has a default.
    let edge = THREE_NODES.replace("127.0.0.1:6003", "127.0.0.1:64535");
    assert_eq!(parse_ok(&edge).cache_nodes[2].metrics_address, address("127.0.0.1:65535"));
}

// ---- cache_nodes and disk paths ----

#[test]
fn at_least_one_cache_node_is_required() {
    assert_eq!(
        error_message("coordinator:\n  primary: 127.0.0.1:50051\ncache_nodes: []\n"),
        "config/config.yaml: cache_nodes: must list at least one cache node"
    );
}

#[test]
fn disk_paths_must_not_be_empty() {
    assert_eq!(
        error_message(&THREE_NODES.replace("./data/cache2", "''")),
        "config/config.yaml: cache_nodes[1].disk_path: must not be empty"
    );
}

#[test]
fn disk_paths_must_be_distinct_however_spelt() {
    assert_eq!(
        error_message(&THREE_NODES.replace("./data/cache3", "./data/cache1")),
        "config/config.yaml: cache_nodes[2].disk_path: ./data/cache1 is already the disk_path of cache_nodes[0]"
    );
    assert_eq!(
        error_message(&THREE_NODES.replace("./data/cache2", "data/cache1/")),
        "config/config.yaml: cache_nodes[1].disk_path: data/cache1/ is already the disk_path of cache_nodes[0]"
    );
}

// ---- replication, quorum, heartbeats, failover ----

#[test]
fn replication_factor_is_between_one_and_the_node_count() {
    assert_eq!(parse_ok(&format!("{THREE_NODES}replication_factor: 3\n")).replication_factor, 3);
    assert_eq!(
        error_message(&format!("{THREE_NODES}replication_factor: 4\n")),
        "config/config.yaml: replication_factor: 4 is more than the number of cache_nodes (3)"
    );
    assert_eq!(
        error_message(&format!("{THREE_NODES}replication_factor: 0\n")),
        "config/config.yaml: replication_factor: must be at least 1"
    );
    // The default of 2 does not fit a single node: the file must say 1.
    assert_eq!(
        error_message(&ONE_NODE.replace("replication_factor: 1\n", "")),
        "config/config.yaml: replication_factor: 2 is more than the number of cache_nodes (1)"
    );
}

#[test]
fn write_quorum_is_between_one_and_the_replication_factor() {
    let config = parse_ok(&format!("{THREE_NODES}write_quorum: 2\n"));
    assert_eq!((config.replication_factor, config.write_quorum), (2, 2));
    assert_eq!(
        error_message(&format!("{THREE_NODES}write_quorum: 3\n")),
        "config/config.yaml: write_quorum: 3 is more than replication_factor 2"
    );
    assert_eq!(
        error_message(&format!("{THREE_NODES}write_quorum: 0\n")),
        "config/config.yaml: write_quorum: must be at least 1"
    );
}

#[test]
fn heartbeat_and_failover_times_must_be_positive() {
    assert_eq!(
        error_message(&format!("{THREE_NODES}heartbeat_interval_ms: 0\n")),
        "config/config.yaml: heartbeat_interval_ms: must be more than 0"
    );
    assert_eq!(
        error_message(&format!("{THREE_NODES}heartbeat_misses: 0\n")),
        "config/config.yaml: heartbeat_misses: must be at least 1"
    );
    assert_eq!(parse_ok(&format!("{THREE_NODES}heartbeat_misses: 1\n")).heartbeat_misses, 1);
    let no_failover_time =
        THREE_NODES.replace("  primary: 127.0.0.1:50051\n", "  primary: 127.0.0.1:50051\n  failover_after_ms: 0\n");
    assert_eq!(
        error_message(&no_failover_time),
        "config/config.yaml: coordinator.failover_after_ms: must be more than 0"
    );
}

// ---- node: limits at and past their value ----

#[test]
fn shards_go_up_to_the_limit() {
    assert_eq!(parse_ok(&with_node(&["shards: 256"])).node.shards, SHARDS_MAX);
    assert_eq!(
        error_message(&with_node(&["shards: 257"])),
        "config/config.yaml: node.shards: 257 is more than the limit 256 (0 means one per core)"
    );
    let per_node = |shards: u32| {
        THREE_NODES.replace("disk_path: ./data/cache2\n", &format!("disk_path: ./data/cache2\n    shards: {shards}\n"))
    };
    assert_eq!(parse_ok(&per_node(256)).cache_nodes[1].shards, Some(256));
    assert_eq!(
        error_message(&per_node(257)),
        "config/config.yaml: cache_nodes[1].shards: 257 is more than the limit 256 (0 means one per core)"
    );
}

#[test]
fn max_value_bytes_goes_from_one_byte_to_the_limit() {
    assert_eq!(parse_ok(&with_node(&["max_value_bytes: 256MiB"])).node.max_value_bytes, MAX_VALUE_BYTES_LIMIT);
    assert_eq!(parse_ok(&with_node(&["max_value_bytes: 1"])).node.max_value_bytes, 1);
    assert_eq!(
        error_message(&with_node(&["max_value_bytes: 268435457"])),
        "config/config.yaml: node.max_value_bytes: 268435457 is more than the limit 256MiB \
         (larger values are streamed in chunks)"
    );
    assert_eq!(
        error_message(&with_node(&["max_value_bytes: 1GiB"])),
        "config/config.yaml: node.max_value_bytes: 1GiB is more than the limit 256MiB (larger values are streamed in chunks)"
    );
    assert_eq!(
        error_message(&with_node(&["max_value_bytes: 0"])),
        "config/config.yaml: node.max_value_bytes: must be at least 1"
    );
}

#[test]
fn segment_bytes_go_from_1mib_to_1gib_in_4kib_steps() {
    assert_eq!(parse_ok(&with_node(&["segment_bytes: 1MiB"])).node.segment_bytes, SEGMENT_BYTES_MIN);
    assert_eq!(parse_ok(&with_node(&["segment_bytes: 1GiB"])).node.segment_bytes, SEGMENT_BYTES_MAX);
    assert_eq!(
        error_message(&with_node(&["segment_bytes: 1044480"])),
        "config/config.yaml: node.segment_bytes: 1020KiB is outside 1MiB..=1GiB"
    );
    assert_eq!(
        error_message(&with_node(&["segment_bytes: 1073745920"])),
        "config/config.yaml: node.segment_bytes: 1048580KiB is outside 1MiB..=1GiB"
    );
    assert_eq!(
        error_message(&with_node(&["segment_bytes: 1049088"])),
        "config/config.yaml: node.segment_bytes: 1049088 is not a multiple of 4KiB"
    );
}

#[test]
fn a_disk_budget_holds_at_least_two_segments() {
    let config = parse_ok(&with_node(&["segment_bytes: 1MiB", "shard_disk_budget_bytes: 2MiB"]));
    assert_eq!(config.node.shard_disk_budget_bytes, 2 << 20);
    assert_eq!(
        error_message(&with_node(&["shard_disk_budget_bytes: 511MiB"])),
        "config/config.yaml: node.shard_disk_budget_bytes: 511MiB is less than 2 segments (512MiB); use 0 for unlimited"
    );
    assert_eq!(parse_ok(&with_node(&["shard_disk_budget_bytes: 0"])).node.shard_disk_budget_bytes, 0);
}

#[test]
fn sync_interval_must_be_positive() {
    assert_eq!(
        error_message(&with_node(&["durability: interval", "sync_interval_ms: 0"])),
        "config/config.yaml: node.sync_interval_ms: must be more than 0"
    );
}

// ---- node_settings ----

fn settings(config: &ClusterConfig, address: Option<&str>, disk: Option<&str>) -> Result<NodeSettings, String> {
    config.node_settings(address, disk.map(Path::new)).map_err(|error| error.to_string())
}

#[test]
fn a_listed_node_gets_its_entry_and_the_node_section() {
    let text = format!(
        "{}node:\n  shards: 2\n  durability: interval\n  sync_interval_ms: 5\n  disk_full_policy: cache\n",
        THREE_NODES.replace("disk_path: ./data/cache2\n", "disk_path: ./data/cache2\n    shards: 6\n")
    );
    let config = parse_ok(&text);
    let expected = |port: u16, disk: &str, shards: u32| NodeSettings {
        address: address(&format!("127.0.0.1:{port}")),
        disk_path: PathBuf::from(disk),
        metrics_address: address(&format!("127.0.0.1:{}", port + 1000)),
        shards,
        durability: Durability::Interval { interval_ms: 5 },
        shard_memory_budget_bytes: 256 << 20,
        shard_disk_budget_bytes: 0,
        disk_full_policy: DiskFullPolicy::Cache,
        max_value_bytes: 64 << 20,
        segment_bytes: 256 << 20,
        prefill_segments: false,
    };
    assert_eq!(settings(&config, Some("127.0.0.1:6001"), None), Ok(expected(6001, "./data/cache1", 2)));
    // The per-node override wins over node.shards.
    assert_eq!(settings(&config, Some("127.0.0.1:6002"), None), Ok(expected(6002, "./data/cache2", 6)));
    // A disk path override replaces only the disk path.
    assert_eq!(settings(&config, Some("127.0.0.1:6003"), Some("/tmp/n3")), Ok(expected(6003, "/tmp/n3", 2)));
}

#[test]
fn an_unlisted_node_needs_a_disk_path() {
    let config = parse_ok(THREE_NODES);
    assert_eq!(
        settings(&config, Some("127.0.0.1:6009"), None),
        Err("config/config.yaml: cache_nodes: no entry has address 127.0.0.1:6009 (the config lists 127.0.0.1:6001, \
             127.0.0.1:6002, 127.0.0.1:6003); give a disk path to run a node the config does not list"
            .to_string())
    );
    let extra = config.node_settings(Some("127.0.0.1:6009"), Some(Path::new("/tmp/extra"))).unwrap();
    assert_eq!(
        extra,
        NodeSettings {
            address: address("127.0.0.1:6009"),
            disk_path: PathBuf::from("/tmp/extra"),
            metrics_address: address("127.0.0.1:7009"),
            shards: 0,
            durability: Durability::Sync,
            shard_memory_budget_bytes: 256 << 20,
            shard_disk_budget_bytes: 0,
            disk_full_policy: DiskFullPolicy::Store,
            max_value_bytes: 64 << 20,
            segment_bytes: 256 << 20,
            prefill_segments: false,
        }
    );
    // Port 0 (the OS chooses) keeps an OS-chosen metrics port instead of a fixed 1000.
    let ephemeral = config.node_settings(Some("127.0.0.1:0"), Some(Path::new("/tmp/e"))).unwrap();
    assert_eq!(ephemeral.metrics_address, address("127.0.0.1:0"));
    assert_eq!(
        settings(&config, Some("127.0.0.1:65000"), Some("/tmp/high")),
        Err("config/config.yaml: cache_nodes: cannot run a node at \"127.0.0.1:65000\": the default \
             (port 65000 + 1000) is more than 65535; set metrics_address"
            .to_string())
    );
}

#[test]
fn without_an_address_only_a_single_node_file_decides() {
    let one = parse_ok(ONE_NODE);
    let only = one.node_settings(None, None).unwrap();
    assert_eq!((only.address, only.disk_path), (address("127.0.0.1:6001"), PathBuf::from("./data/cache1")));
    assert_eq!(one.node_settings(None, Some(Path::new("/srv/c"))).unwrap().disk_path, PathBuf::from("/srv/c"));

    let three = parse_ok(THREE_NODES);
    let expected = "config/config.yaml: cache_nodes: pass --address, the config lists 3 cache nodes".to_string();
    assert_eq!(settings(&three, None, None), Err(expected.clone()));
    assert_eq!(settings(&three, None, Some("/srv/c")), Err(expected));
}

#[test]
fn the_address_asked_for_must_be_host_port() {
    let config = parse_ok(THREE_NODES);
    let error = config.node_settings(Some("6001"), None).unwrap_err();
    assert!(matches!(error, ConfigError::InvalidNodeAddress { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "config/config.yaml: cache_nodes: cannot run a node at \"6001\": \"6001\" is not host:port (no ':port')"
    );
}

#[test]
fn ipv6_node_addresses_are_found() {
    let config = parse_ok(&THREE_NODES.replacen("127.0.0.1:6002", "'[::1]:6002'", 1));
    let found = config.node_settings(Some("[::1]:6002"), None).unwrap();
    assert_eq!(found.disk_path, PathBuf::from("./data/cache2"));
    assert_eq!(found.metrics_address.to_string(), "[::1]:7002");
}

#[test]
fn shard_count_resolves_per_core_within_the_limit() {
    let mut node = parse_ok(ONE_NODE).node_settings(None, None).unwrap();
    let cores = |n: usize| NonZeroUsize::new(n).unwrap();
    assert_eq!(node.shard_count(cores(4)), 4);
    assert_eq!(node.shard_count(cores(1000)), SHARDS_MAX);
    node.shards = 3;
    assert_eq!(node.shard_count(cores(64)), 3);
}

#[test]
fn errors_expose_file_and_key() {
    let error = parse(&format!("{THREE_NODES}write_quorum: 3\n")).unwrap_err();
    assert_eq!(error.file(), Path::new(ORIGIN));
    assert_eq!(error.key(), Some("write_quorum"));
    let error = parse("").unwrap_err();
    assert_eq!(error.key(), None);
}

#[test]
fn port_zero_never_clashes_because_the_kernel_picks_a_free_port() {
    let config = parse_ok(
        "coordinator:\n  primary: 127.0.0.1:0\ncache_nodes:\n  - address: 127.0.0.1:0\n    disk_path: ./d\n    metrics_address: 127.0.0.1:0\nreplication_factor: 1\n",
    );
    assert_eq!(config.cache_nodes[0].address, address("127.0.0.1:0"));
    assert_eq!(config.cache_nodes[0].metrics_address, address("127.0.0.1:0"));
}

// ---- security ----

#[test]
fn security_is_off_unless_configured_and_read_when_present() {
    assert_eq!(parse_ok(THREE_NODES).security, SecurityConfig::default());
    let text = format!(
        "{THREE_NODES}security:\n  tls: {{ca_cert: ca.pem, cert: c.pem, key: c.key, mutual: true}}\n  \
         tokens_file: tokens.yaml\n  cluster_token_file: cluster.token\n"
    );
    let security = parse_ok(&text).security;
    let tls = security.tls.expect("tls");
    assert_eq!((tls.ca_cert, tls.mutual), (PathBuf::from("ca.pem"), true));
    assert_eq!(security.tokens, Some(opticache_common::TokenSource::File(PathBuf::from("tokens.yaml"))));
    assert_eq!(security.cluster_token, Some(opticache_common::SecretSource::File(PathBuf::from("cluster.token"))));
}

#[test]
fn security_mistakes_name_the_key_and_never_echo_a_token() {
    let cases = [
        ("security:\n  tsl: {}\n", "security.tsl"),
        ("security:\n  tokens_file: t.yaml\n  tokens: [{name: a, token: abcdefghijklmnopqr, role: read}]\n  cluster_token: cccccccccccccccccccc\n", "security.tokens_file"),
        ("security:\n  tokens: [{name: a, token: abcdefghijklmnopqr, role: read}]\n", "security.cluster_token"),
        ("security:\n  tokens: [{name: a, token: abcdefghijklmnopqr, role: root}]\n  cluster_token: cccccccccccccccccccc\n", "root"),
        ("security:\n  tokens: [{name: a, token: secret-short, role: read}]\n  cluster_token: cccccccccccccccccccc\n", "security.tokens[0].token"),
        ("security:\n  tokens: [{name: a, token: abcdefghijklmnopqr, role: read}, {name: a, token: abcdefghijklmnopqX, role: read}]\n  cluster_token: cccccccccccccccccccc\n", "security.tokens[1].name"),
        ("security:\n  tokens: [{name: a, token: abcdefghijklmnopqr, role: read}, {name: b, token: abcdefghijklmnopqr, role: admin}]\n  cluster_token: cccccccccccccccccccc\n", "security.tokens[1].token"),
        ("security:\n  cluster_token: cccccccccccccccccccc\n  cluster_token_file: c.token\n", "security.cluster_token_file"),
        ("security:\n  tls: {ca_cert: '', cert: c.pem, key: c.key}\n", "security.tls.ca_cert"),
    ];
    for (section, key) in cases {
        let message = error_message(&format!("{THREE_NODES}{section}"));
        assert!(message.contains(key), "{section:?}: expected {key:?} in {message:?}");
        assert!(!message.contains("secret-short"), "a token was echoed: {message}");
    }
}
