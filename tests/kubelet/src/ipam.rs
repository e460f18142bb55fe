//! Loopback pod IP allocation, persisted as a UID → IP map in the state directory.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

/// Allocates distinct addresses `A.B.C.2..=254`, moving on to `A.B.(C+1)` when a /24 is full.
#[derive(Debug)]
pub struct Ipam {
    base: [u8; 3],
    by_uid: BTreeMap<String, Ipv4Addr>,
    file: Option<PathBuf>,
}

impl Ipam {
    pub fn new(prefix: &str, file: Option<PathBuf>) -> Result<Self> {
        let parts: Vec<u8> = prefix
            .split('.')
            .map(str::parse::<u8>)
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad --ip-prefix {prefix:?}"))?;
        if parts.len() != 3 {
            return Err(anyhow!(
                "--ip-prefix must have three octets, got {prefix:?}"
            ));
        }
        let mut by_uid = BTreeMap::new();
        if let Some(f) = &file {
            if let Ok(text) = std::fs::read_to_string(f) {
                by_uid = serde_json::from_str(&text).unwrap_or_default();
            }
        }
        Ok(Ipam {
            base: [parts[0], parts[1], parts[2]],
            by_uid,
            file,
        })
    }

    fn candidate(&self, index: u32) -> Option<Ipv4Addr> {
        let per = 253u32; // .2 ..= .254
        let third = u32::from(self.base[2]) + index / per;
        let second = u32::from(self.base[1]) + third / 256;
        if second > 255 {
            return None;
        }
        Some(Ipv4Addr::new(
            self.base[0],
            second as u8,
            (third % 256) as u8,
            (2 + index % per) as u8,
        ))
    }

    /// The address of `uid`, allocating the lowest free one if it has none.
    pub fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.by_uid.get(uid) {
            return Ok(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> = self.by_uid.values().copied().collect();
        let mut i = 0;
        let ip = loop {
            let c = self
                .candidate(i)
                .ok_or_else(|| anyhow!("pod IP range exhausted"))?;
            if !used.contains(&c) {
                break c;
            }
            i += 1;
        };
        self.by_uid.insert(uid.to_string(), ip);
        self.save();
        Ok(ip)
    }

    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.by_uid.get(uid).copied()
    }

    pub fn release(&mut self, uid: &str) {
        if self.by_uid.remove(uid).is_some() {
            self.save();
        }
    }

    /// Forget every UID not in `live`.
    pub fn retain(&mut self, live: &std::collections::HashSet<String>) {
        let before = self.by_uid.len();
        self.by_uid.retain(|uid, _| live.contains(uid));
        if self.by_uid.len() != before {
            self.save();
        }
    }

    fn save(&self) {
        if let Some(f) = &self.file {
            let tmp = f.with_extension("tmp");
            let text = serde_json::to_string_pretty(&self.by_uid).unwrap_or_default();
            if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, f)) {
                tracing::warn!(error = %e, "saving IP map");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn unique_and_stable() {
        let mut ipam = Ipam::new("127.0.100", None).unwrap();
        let mut seen = HashSet::new();
        for i in 0..600 {
            let ip = ipam.allocate(&format!("uid-{i}")).unwrap();
            assert!(seen.insert(ip), "duplicate {ip}");
            assert!(ip.octets()[3] >= 2 && ip.octets()[3] <= 254);
        }
        assert_eq!(
            ipam.allocate("uid-0").unwrap(),
            Ipv4Addr::new(127, 0, 100, 2)
        );
        assert_eq!(
            ipam.allocate("uid-252").unwrap(),
            Ipv4Addr::new(127, 0, 100, 254)
        );
        assert_eq!(
            ipam.allocate("uid-253").unwrap(),
            Ipv4Addr::new(127, 0, 101, 2)
        );
        ipam.release("uid-1");
        assert_eq!(ipam.allocate("new").unwrap(), Ipv4Addr::new(127, 0, 100, 3));
    }

    #[test]
    fn persisted() {
        let f = std::env::temp_dir().join(format!("ipam-test-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&f);
        let a = {
            let mut ipam = Ipam::new("127.0.100", Some(f.clone())).unwrap();
            ipam.allocate("x").unwrap();
            ipam.allocate("y").unwrap()
        };
        let ipam = Ipam::new("127.0.100", Some(f.clone())).unwrap();
        assert_eq!(ipam.get("y"), Some(a));
        std::fs::remove_file(&f).unwrap();
        assert!(Ipam::new("127.0", None).is_err());
    }
}
