//! Human-readable output: tables and status descriptions. Pure functions, unit tested. Byte
//! counts use the workspace's one formatting, [`deposito_api::units::human_bytes`].

use deposito_api::gateway::{FileList, FileStatus, Phase, ReplicaList};
use deposito_api::units::human_bytes;

/// Left-aligned columns separated by three spaces, no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                l.push_str(cell);
                l.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The first 12 hex digits of a digest (`-` when there is none yet).
pub fn short_sha(sha: &str) -> String {
    if sha.is_empty() {
        "-".into()
    } else {
        sha.chars().take(12).collect()
    }
}

/// `deposito ls`.
pub fn file_table(list: &FileList) -> String {
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.replicas.to_string(),
                f.ready_replicas.to_string(),
                human_bytes(f.size),
                f.phase.as_str().to_string(),
                short_sha(&f.sha256),
            ]
        })
        .collect();
    table(
        &["NAME", "REPLICAS", "READY", "SIZE", "PHASE", "SHA256"],
        &rows,
    )
}

/// Condition messages worth showing to a user: problems, not the all-good ones. Conditions
/// that are bad when true (`Degraded`...) explain more than a false `Ready`, so those come
/// alone when there are any.
fn notable_conditions(st: &FileStatus) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    let mut not_ready: Vec<String> = Vec::new();
    for c in &st.conditions {
        let good_when_true = matches!(c.type_.as_str(), "Ready" | "Converged" | "Available");
        let msg = c.message.trim().to_string();
        if msg.is_empty() {
            continue;
        }
        let list = match (good_when_true, c.status == "True") {
            (false, true) => &mut problems,
            (true, false) => &mut not_ready,
            _ => continue,
        };
        if !list.contains(&msg) {
            list.push(msg);
        }
    }
    if problems.is_empty() {
        not_ready
    } else {
        problems
    }
}

/// One-line description of where a file stands, used in progress and timeout messages:
/// `phase Degraded, 3/5 copies ready; wants 5 copies, only 3 replicas available`.
pub fn describe_status(st: &FileStatus) -> String {
    let mut s = format!(
        "phase {}, {}/{} copies ready",
        st.phase.as_str(),
        st.ready_replicas,
        st.replicas
    );
    let extra = st.holders.len().saturating_sub(st.replicas as usize);
    if extra > 0 {
        s.push_str(&format!(", {extra} extra to trim"));
    }
    let notes = notable_conditions(st);
    if !notes.is_empty() {
        s.push_str("; ");
        s.push_str(&notes.join("; "));
    } else if st.phase == Phase::Degraded {
        s.push_str(&format!(
            "; wants {} copies, only {} available",
            st.replicas, st.ready_replicas
        ));
    } else if st.phase == Phase::Lost {
        s.push_str("; no verified copy is reachable");
    }
    crate::error::one_line(&s)
}

/// `deposito status`.
pub fn file_status(st: &FileStatus) -> String {
    let holders = if st.holders.is_empty() {
        "-".to_string()
    } else {
        st.holders.join(", ")
    };
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<12}{}\n", format!("{k}:"), v));
    kv("name", st.name.clone());
    kv("namespace", st.namespace.clone());
    kv("phase", st.phase.as_str().to_string());
    kv(
        "replicas",
        format!("{} wanted, {} ready", st.replicas, st.ready_replicas),
    );
    kv(
        "size",
        format!("{} bytes ({})", st.size, human_bytes(st.size)),
    );
    kv(
        "sha256",
        if st.sha256.is_empty() {
            "-".into()
        } else {
            st.sha256.clone()
        },
    );
    kv("holders", holders);
    if let Some(l) = &st.lifecycle {
        kv(
            "lifecycle",
            format!("{} (step {} in force)", l.spec, l.step),
        );
        kv(
            "next",
            l.next_transition.clone().unwrap_or_else(|| "-".into()),
        );
        if let Some(expires) = &l.expires {
            kv("expires", expires.clone());
        }
    }
    if let Some(until) = &st.retain_until {
        kv("retained", format!("until {until}"));
    }
    kv(
        "generation",
        format!("{} (observed {})", st.generation, st.observed_generation),
    );
    if st.conditions.is_empty() {
        kv("conditions", "-".into());
    } else {
        out.push_str("conditions:\n");
        let rows: Vec<Vec<String>> = st
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    crate::error::one_line(&c.message),
                ]
            })
            .collect();
        for line in table(&["TYPE", "STATUS", "REASON", "MESSAGE"], &rows).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `deposito replicas`.
pub fn replica_table(list: &ReplicaList) -> String {
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.url.clone(),
                r.zone.clone().unwrap_or_else(|| "-".into()),
                r.health.clone(),
                if r.draining { "yes" } else { "no" }.to_string(),
                human_bytes(r.free_bytes),
                human_bytes(r.capacity_bytes),
                r.objects.to_string(),
                human_bytes(r.stored_bytes),
                if r.trash_objects == 0 {
                    "-".to_string()
                } else {
                    format!("{} ({})", human_bytes(r.trash_bytes), r.trash_objects)
                },
                format!("{}s", r.last_seen_secs_ago),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "URL",
            "ZONE",
            "HEALTH",
            "DRAINING",
            "FREE",
            "CAPACITY",
            "OBJECTS",
            "STORED",
            "TRASH",
            "LAST-SEEN",
        ],
        &rows,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use deposito_api::gateway::{Condition, ReplicaStatus};

    pub(crate) fn status(name: &str, replicas: u32, ready: u32, phase: Phase) -> FileStatus {
        FileStatus {
            namespace: "default".into(),
            name: name.into(),
            replicas,
            ready_replicas: ready,
            phase,
            sha256: "ab".repeat(32),
            size: 1536,
            holders: (0..ready).map(|i| format!("replica-{i}")).collect(),
            generation: 2,
            observed_generation: 2,
            conditions: vec![],
            lifecycle: None,
            retain_until: None,
        }
    }

    #[test]
    fn ls_table_is_aligned() {
        let list = FileList {
            items: vec![
                status("a.txt", 2, 2, Phase::Ready),
                status("longer name.bin", 5, 3, Phase::Degraded),
            ],
            next: None,
        };
        let out = file_table(&list);
        let want = "\
NAME              REPLICAS   READY   SIZE      PHASE      SHA256
a.txt             2          2       1.5 KiB   Ready      abababababab
longer name.bin   5          3       1.5 KiB   Degraded   abababababab
";
        assert_eq!(out, want);
    }

    #[test]
    fn empty_sha_is_a_dash() {
        assert_eq!(short_sha(""), "-");
    }

    #[test]
    fn describe_degraded_uses_condition_or_fallback() {
        let mut st = status("f", 5, 3, Phase::Degraded);
        assert_eq!(
            describe_status(&st),
            "phase Degraded, 3/5 copies ready; wants 5 copies, only 3 available"
        );
        st.conditions = vec![
            Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "NotEnoughReplicas".into(),
                message: "3/5 verified copies".into(),
            },
            Condition {
                type_: "Degraded".into(),
                status: "True".into(),
                reason: "NotEnoughReplicas".into(),
                message: "wants 5 copies, only 3 replicas available".into(),
            },
        ];
        assert_eq!(
            describe_status(&st),
            "phase Degraded, 3/5 copies ready; wants 5 copies, only 3 replicas available"
        );
        st.conditions.remove(1);
        assert_eq!(
            describe_status(&st),
            "phase Degraded, 3/5 copies ready; 3/5 verified copies"
        );
        let mut st = status("f", 1, 1, Phase::Trimming);
        st.holders.push("replica-9".into());
        assert_eq!(
            describe_status(&st),
            "phase Trimming, 1/1 copies ready, 1 extra to trim"
        );
    }

    #[test]
    fn status_output_lists_everything() {
        let mut st = status("f.txt", 2, 2, Phase::Ready);
        st.conditions.push(Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Converged".into(),
            message: "2/2 verified copies".into(),
        });
        let out = file_status(&st);
        let sha = "ab".repeat(32);
        let want = format!(
            "\
name:       f.txt
namespace:  default
phase:      Ready
replicas:   2 wanted, 2 ready
size:       1536 bytes (1.5 KiB)
sha256:     {sha}
holders:    replica-0, replica-1
generation: 2 (observed 2)
conditions:
  TYPE    STATUS   REASON      MESSAGE
  Ready   True     Converged   2/2 verified copies
"
        );
        assert_eq!(out, want);
    }

    #[test]
    fn replica_table_shows_draining_zone_full_and_trash() {
        let row = ReplicaStatus {
            id: "r0".into(),
            url: "http://127.0.0.10:7070".into(),
            zone: None,
            health: "Live".into(),
            draining: true,
            free_bytes: 2048,
            capacity_bytes: 4096,
            objects: 3,
            trash_bytes: 0,
            trash_objects: 0,
            stored_bytes: 1024,
            last_seen_secs_ago: 1,
        };
        let full = ReplicaStatus {
            id: "r1".into(),
            health: "Full".into(),
            draining: false,
            free_bytes: 0,
            trash_bytes: 1536,
            trash_objects: 2,
            ..row.clone()
        };
        let out = replica_table(&ReplicaList {
            items: vec![row, full],
        });
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("ID   URL"));
        assert_eq!(
            lines.next().unwrap(),
            "r0   http://127.0.0.10:7070   -      Live     yes        2.0 KiB   4.0 KiB    3         1.0 KiB   -             1s"
        );
        assert_eq!(
            lines.next().unwrap(),
            "r1   http://127.0.0.10:7070   -      Full     no         0 B       4.0 KiB    3         1.0 KiB   1.5 KiB (2)   1s"
        );
    }
}
