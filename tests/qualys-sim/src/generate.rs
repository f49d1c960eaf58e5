//! Builds a deterministic account from `(containers, seed, start time)`.
//!
//! Only key fields are stored (shas, uuids, states, times, image links, vulnerability lists);
//! everything cosmetic is derived again when a record is rendered. Distribution: about N/4
//! images, 80 % RUNNING / 15 % STOPPED / 5 % DELETED, about 3 % digest-only records, `updated`
//! over the six days before start with a few dozen records sharing exact milliseconds, 0–12
//! vulnerability objects per image from a pool of max(50, N/10) QIDs, all in the KnowledgeBase.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::account::{Account, Container, ContainerBody, GenVuln, Image, ImageBody, Package, Vuln};
use crate::kb::KbEntry;
use crate::rng::SplitMix;

const DAY_MS: i64 = 86_400_000;

const OS_LIST: &[&str] = &[
    "Debian Linux 12.4",
    "Debian Linux 11.8",
    "Ubuntu Linux 22.04",
    "Alpine Linux 3.19.1",
    "Red Hat Enterprise Linux 9.3",
];

/// OS packages: (name, vendor, sibling package that can carry the same QID).
const OS_PACKAGES: &[(&str, &str, &str)] = &[
    ("openssl", "openssl", "libssl3"),
    ("libc6", "gnu", "libc-bin"),
    ("zlib1g", "zlib", "zlib1g-dev"),
    ("curl", "haxx", "libcurl4"),
    ("xz-utils", "tukaani", "liblzma5"),
    ("libxml2", "xmlsoft", "libxml2-utils"),
    ("bash", "gnu", "bash-static"),
    ("perl-base", "perl", "perl-modules"),
    ("libgnutls30", "gnu", "gnutls-bin"),
    ("sqlite3", "sqlite", "libsqlite3-0"),
];

/// Library files (SCA): (name, vendor).
const LIBRARIES: &[(&str, &str)] = &[
    ("log4j-core", "apache"),
    ("jackson-databind", "fasterxml"),
    ("spring-core", "vmware"),
    ("netty-codec-http", "netty"),
    ("snakeyaml", "snakeyaml_project"),
    ("commons-text", "apache"),
    ("guava", "google"),
    ("tomcat-embed-core", "apache"),
];

/// Builds the account.
pub(crate) fn account(containers: usize, seed: u64, start_ms: i64) -> Account {
    let mut rng = SplitMix::new(seed);
    let kb = knowledge_base(containers, &mut rng, start_ms);
    let qids: Vec<u32> = kb.keys().copied().collect();

    let image_count = (containers / 4).max(1);
    let mut images = Vec::with_capacity(image_count);
    for ordinal in 0..image_count as u64 {
        images.push(image(ordinal, &mut rng, &kb, &qids, start_ms));
    }

    // A few dozen containers share one of three exact `updated` values (keyset ties).
    let tie_values = [
        start_ms - 2 * DAY_MS - 12_345,
        start_ms - 4 * DAY_MS + 777,
        start_ms - DAY_MS / 2,
    ];
    let tie_stride = (containers / 36).max(2);

    let mut list = Vec::with_capacity(containers);
    for ordinal in 0..containers {
        let image = rng.below(image_count as u64) as usize;
        let roll = rng.below(100);
        let state = match roll {
            0..80 => "RUNNING",
            80..95 => "STOPPED",
            _ => "DELETED",
        };
        let digest_only = rng.percent(3);
        let updated_ms = if ordinal % tie_stride == 1 {
            tie_values[(ordinal / tie_stride) % tie_values.len()]
        } else {
            start_ms - rng.range(1, 6 * DAY_MS)
        };
        let created_ms = updated_ms - rng.range(DAY_MS / 24, 40 * DAY_MS);
        let state_changed_ms = created_ms + rng.range(1_000, 5_000);
        list.push(Container {
            sha: rng.hex(64),
            uuid: rng.uuid(),
            state: state.to_string(),
            created_ms,
            updated_ms,
            state_changed_ms: state_changed_ms.min(updated_ms),
            image: Some(image),
            digest_only,
            vulns: None,
            recorded_counts: None,
            body: ContainerBody::Generated {
                ordinal: ordinal as u64,
            },
        });
    }

    let by_sha: HashMap<String, usize> = list
        .iter()
        .enumerate()
        .map(|(i, c)| (c.sha.clone(), i))
        .collect();
    let image_by_sha = images
        .iter()
        .enumerate()
        .map(|(i, image)| (image.sha.clone(), i))
        .collect();
    Account {
        seed,
        customer_uuid: SplitMix::derive(seed, 0xC057).uuid(),
        containers: list,
        by_sha,
        images,
        image_by_sha,
        kb,
    }
}

fn knowledge_base(containers: usize, rng: &mut SplitMix, start_ms: i64) -> BTreeMap<u32, KbEntry> {
    let size = (containers / 10).max(50);
    let mut kb = BTreeMap::new();
    let mut local_qid = 370_000u32;
    let mut distro_qid = 6_000_000u32;
    for i in 0..size {
        let distro = i % 3 == 2;
        let qid = if distro {
            distro_qid += 1 + rng.below(40) as u32;
            distro_qid
        } else {
            local_qid += 1 + rng.below(60) as u32;
            local_qid
        };
        let library = !distro && rng.percent(40);
        let (product, vendor) = if library {
            let (name, vendor) = rng.pick(LIBRARIES);
            (name.to_string(), vendor.to_string())
        } else {
            let (name, vendor, _) = rng.pick(OS_PACKAGES);
            (name.to_string(), vendor.to_string())
        };
        let severity = [1u8, 2, 3, 3, 4, 4, 5][rng.below(7) as usize];
        let cves: Vec<String> = (0..1 + rng.below(4))
            .map(|_| format!("CVE-{}-{}", 2019 + rng.below(6), 1000 + rng.below(49_000)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let published_ms = start_ms - rng.range(30 * DAY_MS, 5 * 365 * DAY_MS);
        let modified_ms = published_ms + rng.range(DAY_MS, 20 * DAY_MS);
        let base = f64::from(severity) * 2.0 - rng.below(10) as f64 / 10.0;
        let title = if distro {
            format!(
                "Debian Security Update for {product} (DSA {}-1)",
                5000 + rng.below(800)
            )
        } else if library {
            format!("{vendor} {product} Multiple Vulnerabilities ({})", cves[0])
        } else {
            format!("{product} Security Update ({})", cves.join(", "))
        };
        let entry = KbEntry {
            qid,
            title,
            severity,
            vuln_type: if rng.percent(15) {
                "Vulnerability or Potential Vulnerability".into()
            } else {
                "Vulnerability".into()
            },
            category: if distro {
                "Debian".into()
            } else {
                "Local".into()
            },
            published_ms,
            modified_ms,
            patchable: rng.percent(85),
            cves,
            cvss_base: Some(format!("{:.1}", base.clamp(1.0, 10.0))),
            cvss_temporal: Some(format!("{:.1}", (base - 0.8).clamp(0.5, 10.0))),
            access_vector: if library { 3 } else { 1 + rng.below(3) as u8 },
            cvss3_base: (!rng.percent(10)).then(|| format!("{:.1}", (base + 0.4).clamp(1.0, 10.0))),
            cvss3_temporal: Some(format!("{:.1}", (base - 0.2).clamp(0.5, 10.0))),
            product,
            vendor,
            library,
            raw: None,
        };
        kb.insert(qid, entry);
    }
    kb
}

fn image(
    ordinal: u64,
    rng: &mut SplitMix,
    kb: &BTreeMap<u32, KbEntry>,
    qids: &[u32],
    start_ms: i64,
) -> Image {
    let sha = rng.hex(64);
    let uuid = rng.uuid();
    let digest = rng.hex(64);
    let (app, team) = Account::app_name(ordinal);
    let os = *rng.pick(OS_LIST);
    let created_ms = start_ms - rng.range(7 * DAY_MS, 90 * DAY_MS);
    let scanned_ms = start_ms - rng.range(DAY_MS / 4, 7 * DAY_MS);
    let layers: Vec<String> = (0..2 + rng.below(3)).map(|_| rng.hex(64)).collect();
    let scanned = !rng.percent(4);
    let mut vulns = Vec::new();
    if scanned && !rng.percent(12) {
        let wanted = 1 + rng.below(12) as usize;
        let mut chosen = BTreeSet::new();
        while chosen.len() < wanted.min(qids.len()) {
            chosen.insert(*rng.pick(qids));
        }
        for qid in chosen {
            let Some(entry) = kb.get(&qid) else { continue };
            let first_found_ms = scanned_ms - rng.range(DAY_MS, 30 * DAY_MS);
            let layer = rng.below(layers.len() as u64) as usize;
            let mut packages = vec![package(entry, rng, 0)];
            if !entry.library && rng.percent(8) {
                packages.push(sibling(entry, &packages[0]));
            }
            if rng.percent(3) {
                packages.clear();
            }
            let potential = entry.vuln_type.contains("Potential") && rng.percent(50);
            vulns.push(Vuln::Generated(GenVuln {
                qid,
                packages,
                potential,
                first_found_ms,
                last_found_ms: scanned_ms,
                layer,
            }));
            // The same QID found in a second package of the same image.
            if rng.percent(10) {
                let second = if entry.library {
                    package(entry, rng, 1)
                } else {
                    sibling(entry, &package(entry, rng, 0))
                };
                vulns.push(Vuln::Generated(GenVuln {
                    qid,
                    packages: vec![second],
                    potential,
                    first_found_ms,
                    last_found_ms: scanned_ms,
                    layer,
                }));
            }
        }
    }
    Image {
        sha,
        uuid,
        digest,
        scanned,
        vulns,
        body: ImageBody::Generated {
            ordinal,
            app,
            team,
            os,
            created_ms,
            scanned_ms,
            layers,
        },
    }
}

/// A package carrying `entry`; `copy` > 0 gives a library at another path.
fn package(entry: &KbEntry, rng: &mut SplitMix, copy: u32) -> Package {
    let major = 1 + rng.below(3);
    let minor = rng.below(15);
    let version = format!("{major}.{minor}.{}", rng.below(9));
    let fix_version = rng.percent(85).then(|| format!("{major}.{}.0", minor + 1));
    let path = entry.library.then(|| {
        let dir = if copy == 0 {
            "/app/lib"
        } else {
            "/app/plugins/extra/lib"
        };
        format!("{dir}/{}-{version}.jar", entry.product)
    });
    Package {
        name: entry.product.clone(),
        version,
        fix_version,
        path,
    }
}

/// The sibling OS package of `first` (e.g. `libc-bin` next to `libc6`).
fn sibling(entry: &KbEntry, first: &Package) -> Package {
    let name = OS_PACKAGES
        .iter()
        .find(|(name, _, _)| *name == entry.product)
        .map(|(_, _, sibling)| sibling.to_string())
        .unwrap_or_else(|| format!("{}-common", entry.product));
    Package {
        name,
        version: first.version.clone(),
        fix_version: first.fix_version.clone(),
        path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_account() {
        let a = account(200, 9, 1_712_000_000_000);
        let b = account(200, 9, 1_712_000_000_000);
        assert_eq!(a.truth(), b.truth());
        assert_ne!(a.truth(), account(200, 10, 1_712_000_000_000).truth());
    }

    #[test]
    fn distribution_has_the_promised_shape() {
        let start = 1_712_000_000_000;
        let account = account(2000, 3, start);
        let truth = account.truth();
        assert_eq!(truth.containers.len(), 2000);
        assert_eq!(truth.images.len(), 500);
        let running = truth
            .containers
            .iter()
            .filter(|c| c.state == "RUNNING")
            .count();
        assert!((1400..1800).contains(&running), "{running} running");
        let digest_only = truth
            .containers
            .iter()
            .filter(|c| c.image_sha.is_none())
            .count();
        assert!(
            (20..120).contains(&digest_only),
            "{digest_only} digest-only"
        );
        assert!(
            truth
                .containers
                .iter()
                .all(|c| c.updated_ms < start && c.updated_ms >= start - 6 * DAY_MS)
        );
        let mut per_ms: HashMap<i64, usize> = HashMap::new();
        for c in &truth.containers {
            *per_ms.entry(c.updated_ms).or_default() += 1;
        }
        let tied: usize = per_ms.values().filter(|n| **n > 1).sum();
        assert!((24..=200).contains(&tied), "{tied} tied");
        let kb: BTreeSet<u32> = truth.kb.iter().map(|k| k.qid).collect();
        assert!(truth.findings.iter().all(|f| kb.contains(&f.qid)));
        assert!(truth.findings.iter().any(|f| f.package.is_none()));
        assert!(truth.findings.iter().any(|f| f.path.is_some()));
        // Some container carries one QID in two vulnerability objects.
        let doubled = account.containers.iter().any(|c| {
            let qids: Vec<u32> = account.vulns_of(c).iter().map(Vuln::qid).collect();
            let distinct: BTreeSet<u32> = qids.iter().copied().collect();
            distinct.len() < qids.len()
        });
        assert!(doubled);
    }
}
