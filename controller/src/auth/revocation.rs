//! `[security] revoked`, parsed so that it fails closed: every well-formed
//! entry applies even when others in the same list are malformed; the
//! malformed ones are returned for the caller to report loudly (error log and
//! audit), never silently dropped and never a reason to keep an older list.

use std::collections::HashSet;

use pgrollout_shared::identity::SpiffeId;

/// The revocations that apply, and the entries that could not be read.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    pub ids: HashSet<String>,
    /// Serials as `normalize_serial` spells them.
    pub serials: HashSet<String>,
    /// Entries that are neither a SPIFFE id nor a serial, as written.
    pub malformed: Vec<String>,
}

impl Revocations {
    pub fn parse(entries: &[String]) -> Self {
        let mut revocations = Revocations::default();
        for entry in entries {
            let trimmed = entry.trim();
            if let Some(serial) = trimmed.strip_prefix("serial:") {
                match parse_serial(serial) {
                    Some(serial) => revocations.serials.insert(serial),
                    None => {
                        revocations.malformed.push(entry.clone());
                        continue;
                    }
                };
            } else if SpiffeId::parse(trimmed).is_ok() {
                revocations.ids.insert(trimmed.to_owned());
            } else {
                revocations.malformed.push(entry.clone());
            }
        }
        revocations
    }

    pub fn len(&self) -> usize {
        self.ids.len() + self.serials.len()
    }

    /// Adds every revocation of `other` (a union: a reload that fails never
    /// takes a revocation back).
    pub fn extend(&mut self, other: Revocations) {
        self.ids.extend(other.ids);
        self.serials.extend(other.serials);
        self.malformed.extend(other.malformed);
    }
}

/// A serial in hex, as `serial:<hex>` or in openssl's colon-separated form
/// (`serial:01:AB:…`, `openssl x509 -serial` without the colons is the same).
fn parse_serial(text: &str) -> Option<String> {
    let digits: String = text.split(':').collect();
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_hexdigit())
        && text.split(':').all(|group| !group.is_empty());
    well_formed.then(|| normalize_serial(&digits))
}

/// Serials compare without leading zeros, in lower case.
pub fn normalize_serial(serial: &str) -> String {
    serial.trim_start_matches('0').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_entries_apply_beside_malformed_ones() {
        let parsed = Revocations::parse(&[
            "serial:01:AB:cd".into(),
            "serial:00FF".into(),
            "spiffe://test.local/operator/alice".into(),
            "serial:GG:01".into(),
            "serial:01::02".into(),
            "serial:".into(),
            "spife://test.local/operator/bob".into(),
        ]);
        assert_eq!(
            parsed.serials,
            HashSet::from(["1abcd".to_owned(), "ff".to_owned()])
        );
        assert_eq!(
            parsed.ids,
            HashSet::from(["spiffe://test.local/operator/alice".to_owned()])
        );
        assert_eq!(
            parsed.malformed,
            vec![
                "serial:GG:01",
                "serial:01::02",
                "serial:",
                "spife://test.local/operator/bob"
            ]
        );
    }
}
