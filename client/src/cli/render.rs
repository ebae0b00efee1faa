//! Text the CLI prints: the cluster status table, batch-get lines, sizes.
//!
//! Pure functions from values to `String`, so the exact output is pinned by
//! tests. Invariant: every line ends in `\n` and none has trailing spaces;
//! a batch-get line never contains a raw newline or tab from a value, so
//! there is always exactly one line per key.

use std::fmt::Write as _;

use opticache_client::{ClusterStatus, NodeState, Role, Value};

use super::args::ValueFormat;

/// Units of [`human_bytes`], each 1024 times the previous.
const BYTE_UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `1536` → `1.5 KiB`; bytes below 1 KiB are exact (`512 B`).
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < BYTE_UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // 1023.96 KiB would print as "1024.0 KiB": move to the next unit instead.
    if (value * 10.0).round() / 10.0 >= 1024.0 && unit < BYTE_UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", BYTE_UNITS[unit])
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Standby => "standby",
        Role::Unspecified => "unknown",
    }
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Up => "up",
        NodeState::Suspect => "suspect",
        NodeState::Down => "down",
        NodeState::Recovering => "recovering",
        NodeState::Unspecified => "unknown",
    }
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// The status as an aligned table: role and epoch, then one row per node.
pub fn status_table(status: &ClusterStatus) -> String {
    let mut out = format!("role   {}\nepoch  {}\n\n", role_name(status.role), status.epoch);
    if status.nodes.is_empty() {
        out.push_str("(no cache nodes)\n");
        return out;
    }
    let header = ["ADDRESS", "STATE", "SHARDS", "KEYS", "DISK"];
    let align = [Align::Left, Align::Left, Align::Right, Align::Right, Align::Right];
    let rows: Vec<[String; 5]> = status
        .nodes
        .iter()
        .map(|n| {
            [
                n.address.clone(),
                state_name(n.state).to_owned(),
                n.shards.to_string(),
                n.keys.to_string(),
                human_bytes(n.disk_bytes),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row = header.map(str::to_owned);
    for row in std::iter::once(&header_row).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths[i];
            match align[i] {
                Align::Left => write!(line, "{cell:<width$}"),
                Align::Right => write!(line, "{cell:>width$}"),
            }
            .expect("writing to a String cannot fail");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One batch-get line, tab-separated: key, `found`/`missing`, version, size
/// in bytes (`-` for a miss), and the value when asked for.
pub fn batch_line(key: &str, result: Option<&Value>, values: Option<ValueFormat>) -> String {
    let key = escape_text(key);
    let Some(found) = result else {
        return format!("{key}\tmissing\t-\t-\n");
    };
    let mut line = format!("{key}\tfound\t{}\t{}", found.version, found.value.len());
    match values {
        None => {}
        Some(ValueFormat::Hex) => {
            line.push('\t');
            for byte in found.value.iter() {
                write!(line, "{byte:02x}").expect("writing to a String cannot fail");
            }
        }
        Some(ValueFormat::Text) => {
            line.push('\t');
            line.push_str(&escape_text(&String::from_utf8_lossy(&found.value)));
        }
    }
    line.push('\n');
    line
}

/// Escapes control characters (newline, tab, ...) and `\`, so any text stays
/// on one line and a tab is always a column separator.
fn escape_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == '\\' { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use opticache_proto::v1::{ClusterStatusResponse, NodeStatus};

    use super::*;

    #[test]
    fn sizes_are_readable() {
        let cases: [(u64, &str); 10] = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1_048_575, "1.0 MiB"),
            (1_048_576, "1.0 MiB"),
            (10 * 1024 * 1024 * 1024 + 1, "10.0 GiB"),
            (3 << 40, "3.0 TiB"),
            (1 << 60, "1.0 EiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(human_bytes(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn status_table_is_aligned() {
        let response = ClusterStatusResponse {
            role: Role::Primary as i32,
            epoch: 7,
            nodes: vec![
                NodeStatus {
                    address: "127.0.0.1:6001".into(),
                    state: NodeState::Up as i32,
                    shards: 4,
                    keys: 1_200_345,
                    disk_bytes: 1_610_612_736,
                },
                NodeStatus {
                    address: "10.0.0.12:6002".into(),
                    state: NodeState::Recovering as i32,
                    shards: 16,
                    keys: 0,
                    disk_bytes: 512,
                },
                NodeStatus {
                    address: "node-c:6003".into(),
                    state: NodeState::Down as i32,
                    shards: 2,
                    keys: 42,
                    disk_bytes: 1536,
                },
            ],
        };
        let expected = "\
role   primary
epoch  7

ADDRESS         STATE       SHARDS     KEYS     DISK
127.0.0.1:6001  up               4  1200345  1.5 GiB
10.0.0.12:6002  recovering      16        0    512 B
node-c:6003     down             2       42  1.5 KiB
";
        assert_eq!(status_table(&ClusterStatus::from(response)), expected);
    }

    #[test]
    fn status_without_nodes_says_so() {
        let response = ClusterStatusResponse { role: Role::Standby as i32, epoch: 0, nodes: vec![] };
        assert_eq!(status_table(&ClusterStatus::from(response)), "role   standby\nepoch  0\n\n(no cache nodes)\n");
    }

    #[test]
    fn batch_lines_show_presence_version_and_size() {
        let value = Value { value: Bytes::from_static(b"a\n\xff\\"), version: 9 };
        assert_eq!(batch_line("k1", Some(&value), None), "k1\tfound\t9\t4\n");
        assert_eq!(batch_line("k2", None, Some(ValueFormat::Hex)), "k2\tmissing\t-\t-\n");
        assert_eq!(batch_line("k1", Some(&value), Some(ValueFormat::Hex)), "k1\tfound\t9\t4\t610aff5c\n");
        assert_eq!(batch_line("k1", Some(&value), Some(ValueFormat::Text)), "k1\tfound\t9\t4\ta\\n\u{fffd}\\\\\n");
        let empty = Value { value: Bytes::new(), version: 1 };
        assert_eq!(batch_line("e", Some(&empty), Some(ValueFormat::Hex)), "e\tfound\t1\t0\t\n");
        assert_eq!(batch_line("tab\tkey", None, None), "tab\\tkey\tmissing\t-\t-\n");
    }
}
