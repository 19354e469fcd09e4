//! Fleets and signatures (issue 19 with issue 24). A fleet environment is
//! many targets in several zones, approved once; a statement names one zone
//! and one target. So a fleet's statements name zone [`ZONE`] and target
//! `fleet:<hash>` ([`target_of`]): the SHA-256 of its sorted member list
//! (`zone/target`). Each member's job carries the list; the agent recomputes
//! the hash and requires its own `zone/target` in it — a statement signed for
//! a fleet is good on its members and nowhere else, and a controller that adds
//! or removes a member changes the hash, so every signature stops matching.
//!
//! `resume` of a halted fleet rollout is signed by the operator who runs it
//! ([`resume_subject`]); the agent asks for that signature before it runs a
//! fleet's deploy again on a target where it failed (`signing::replay`).

use sha2::{Digest, Sha256};

/// The zone a fleet's statements name: the members say which zones.
pub const ZONE: &str = "*";

/// What a fleet's target starts with; the rest is the members' hash.
pub const TARGET_PREFIX: &str = "fleet:";

/// One member as the job and the hash spell it.
pub fn member(zone: &str, target: &str) -> String {
    format!("{zone}/{target}")
}

/// `fleet:<sha256>` of the members, sorted and each once (the order the
/// controller lists them in is not signed; the set is).
pub fn target_of(members: &[String]) -> String {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hasher = Sha256::new();
    hasher.update(b"pgrollout-fleet-members-v1\n");
    hasher.update((sorted.len() as u64).to_be_bytes());
    for m in sorted {
        hasher.update((m.len() as u64).to_be_bytes());
        hasher.update(m.as_bytes());
    }
    format!("{TARGET_PREFIX}{}", hex::encode(hasher.finalize()))
}

/// What a `resume` statement binds in place of a plan id: the fleet rollout
/// resumed and its plan, so it resumes that rollout only.
pub fn resume_subject(fleet_rollout: &str, plan_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"pgrollout-fleet-resume-v1\n");
    for part in [fleet_rollout, plan_id] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(members: &[&str]) -> Vec<String> {
        members.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn the_hash_is_of_the_set_and_changes_with_any_member() {
        let fleet = target_of(&list(&["eu/t1", "eu/t2", "us/t1"]));
        assert!(fleet.starts_with(TARGET_PREFIX));
        assert_eq!(fleet, target_of(&list(&["us/t1", "eu/t1", "eu/t2"])));
        assert_eq!(
            fleet,
            target_of(&list(&["us/t1", "eu/t1", "eu/t2", "eu/t1"]))
        );
        assert_ne!(fleet, target_of(&list(&["eu/t1", "eu/t2"])));
        assert_ne!(
            fleet,
            target_of(&list(&["eu/t1", "eu/t2", "us/t1", "us/t2"]))
        );
        // Moving a byte between members is another set.
        assert_ne!(
            target_of(&list(&["eu/t1", "eu/t2x"])),
            target_of(&list(&["eu/t1x", "eu/t2"]))
        );
        assert_ne!(resume_subject("f-1", "ab"), resume_subject("f-2", "ab"));
        assert_ne!(resume_subject("f-1", "ab"), resume_subject("f-1", "ac"));
    }
}
