//! The agent's `controller` key: one address, or several (issue 18).
//!
//! ```toml
//! controller = "https://ctl-a.internal:7411"
//! controller = ["https://ctl-a.internal:7411", "https://ctl-b.internal:7411"]
//! ```
//!
//! With several, the agent holds one stream to one of them and moves to the
//! next when it drops or cannot be reached (`link/rotation.rs`). A single
//! string may also list them separated by commas, so the environment override
//! `PGROLLOUT_AGENT__CONTROLLER=https://a:7411,https://b:7411` can name several
//! (an environment variable cannot hold a TOML array). Every address uses the
//! one `[tls]` identity, so they share a scheme.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The controller addresses, in the order the agent tries them. Never empty
/// once `validate` passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerAddresses(Vec<String>);

impl ControllerAddresses {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The address at `index`, wrapping around: the rotation's cursor.
    pub fn at(&self, index: usize) -> &str {
        match self.0.len() {
            0 => "",
            len => &self.0[index % len],
        }
    }

    /// Checks the list: `Err((key, reason))` names the entry at fault.
    /// `has_tls`: the config has a `[tls]` table.
    pub fn validate(&self, has_tls: bool) -> Result<(), (String, String)> {
        if self.0.is_empty() {
            return Err((
                "controller".into(),
                "lists no address: give one, e.g. \"https://controller.internal:7411\", or a list of them".into(),
            ));
        }
        let key = |index: usize| match self.0.len() {
            1 => "controller".to_owned(),
            _ => format!("controller[{index}]"),
        };
        for (index, address) in self.0.iter().enumerate() {
            check_address(address).map_err(|reason| (key(index), reason))?;
            let normal = normalise(address);
            if let Some(first) = self.0[..index]
                .iter()
                .position(|earlier| normalise(earlier) == normal)
            {
                return Err((
                    key(index),
                    format!(
                        "{address} is listed twice (also controller[{first}]); list each controller once"
                    ),
                ));
            }
        }
        let secure = self.0.iter().filter(|a| a.starts_with("https://")).count();
        if secure != 0 && secure != self.0.len() {
            return Err((
                "controller".into(),
                "mixes http:// and https:// addresses: every controller is reached with the one [tls] identity, \
                 so all must be https:// (or all http://, against --dev-plaintext controllers only)"
                    .into(),
            ));
        }
        if secure != 0 && !has_tls {
            return Err((
                "tls".into(),
                "an https:// controller needs a [tls] table with ca, cert and key (`pgrollout ca issue agent`)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for ControllerAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// One address: a URL the gRPC client can dial, `scheme://host:port`.
fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("must not be empty".into());
    }
    if !address.starts_with("http://") && !address.starts_with("https://") {
        return Err(format!(
            "must be an http:// or https:// URL, not {address:?}"
        ));
    }
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_owned())
        .map_err(|error| format!("{address:?} is not a valid URL: {error}"))?;
    let uri = endpoint.uri();
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{address:?} names no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{address:?} has a path; give scheme://host:port only (the agents listener of `pgrollout serve`)"
        ));
    }
    Ok(())
}

/// The form two spellings of one address share: `https://Ctl:7411/` and
/// `https://ctl:7411` are the same controller.
fn normalise(address: &str) -> String {
    address.trim_end_matches('/').to_ascii_lowercase()
}

fn split(text: &str) -> Vec<String> {
    text.split(',').map(|part| part.trim().to_owned()).collect()
}

impl<'de> Deserialize<'de> for ControllerAddresses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Addresses;
        impl<'de> Visitor<'de> for Addresses {
            type Value = ControllerAddresses;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a controller address such as \"https://controller.internal:7411\", or a list of them",
                )
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(ControllerAddresses(split(text)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut addresses = Vec::new();
                while let Some(address) = seq.next_element::<String>()? {
                    addresses.push(address.trim().to_owned());
                }
                Ok(ControllerAddresses(addresses))
            }
        }
        deserializer.deserialize_any(Addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(addresses: &[&str]) -> ControllerAddresses {
        ControllerAddresses(addresses.iter().map(|a| a.to_string()).collect())
    }

    fn problem(addresses: &[&str], has_tls: bool) -> (String, String) {
        list(addresses)
            .validate(has_tls)
            .expect_err("should be refused")
    }

    #[test]
    fn one_address_or_several_of_one_scheme_are_valid() {
        assert!(list(&["https://a:7411"]).validate(true).is_ok());
        assert!(list(&["https://a:7411", "https://b:7411/"])
            .validate(true)
            .is_ok());
        assert!(list(&["http://127.0.0.1:1", "http://127.0.0.1:2"])
            .validate(false)
            .is_ok());
    }

    #[test]
    fn an_empty_list_is_refused() {
        let (key, reason) = problem(&[], true);
        assert_eq!(key, "controller");
        assert!(reason.contains("no address"), "{reason}");
    }

    #[test]
    fn mixed_schemes_are_refused() {
        let (key, reason) = problem(&["https://a:7411", "http://b:7411"], true);
        assert_eq!(key, "controller");
        assert!(reason.contains("mixes http:// and https://"), "{reason}");
    }

    #[test]
    fn a_duplicate_names_both_entries() {
        let (key, reason) = problem(
            &["https://a:7411", "https://b:7411", "https://A:7411/"],
            true,
        );
        assert_eq!(key, "controller[2]");
        assert!(reason.contains("controller[0]"), "{reason}");
    }

    #[test]
    fn each_entry_must_be_a_url_with_a_host_and_no_path() {
        let (key, reason) = problem(&["https://a:7411", "b:7411"], true);
        assert_eq!(key, "controller[1]");
        assert!(reason.contains("http:// or https://"), "{reason}");
        let (key, reason) = problem(&["https://a:7411/agents"], true);
        assert_eq!(key, "controller");
        assert!(reason.contains("path"), "{reason}");
        let (key, _) = problem(&["https://a:7411", ""], true);
        assert_eq!(key, "controller[1]");
    }

    #[test]
    fn https_needs_the_tls_table() {
        let (key, reason) = problem(&["https://a:7411", "https://b:7411"], false);
        assert_eq!(key, "tls");
        assert!(reason.contains("[tls]"), "{reason}");
    }

    #[test]
    fn a_comma_separated_string_lists_several() {
        assert_eq!(
            split("https://a:7411, https://b:7411"),
            vec!["https://a:7411", "https://b:7411"]
        );
        assert_eq!(list(&["x", "y"]).at(3), "y");
        assert_eq!(list(&["x", "y"]).to_string(), "x, y");
    }
}
