//! The post-deploy watch's sample job (issue 7), validated from its wire
//! form. A sample is stateless: it names what to read and what to probe; the
//! controller keeps the watch, its baseline and its verdicts.

use crate::proto;
use crate::routine::{routines_from_wire, InvalidField, Routine, MAX_IDENTIFIER_BYTES};
use crate::signing::sources::{sources_from_wire, SourcePlan};

/// Most names one watch may cover.
pub const MAX_WATCHED_NAMES: usize = 1_000;

/// One routine name a watch covers: every overload of `schema.name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchedName {
    pub schema: String,
    pub name: String,
}

impl std::fmt::Display for WatchedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What one sample reads and probes.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchSampleSpec {
    pub watch_id: String,
    /// Sorted, without duplicates.
    pub names: Vec<WatchedName>,
    /// Routines whose smoke tests are run, rolled back, to see whether calls
    /// fail.
    pub probes: Vec<Routine>,
    /// The deployed plans the probes are taken from, whole (issue 19; see
    /// `signing::sources`): set by the controller at each sample where only
    /// approved SQL runs, never stored with the watch.
    pub sources: Vec<SourcePlan>,
}

impl WatchSampleSpec {
    /// The spec for `probes`: the names are theirs.
    pub fn for_routines(watch_id: String, probes: Vec<Routine>) -> Self {
        let named = probes.clone();
        Self::with_probes(watch_id, &named, probes)
    }

    /// The names of `named`, probed with `probes` (which may be fewer: where
    /// only approved SQL runs, a routine nothing deployed has is not probed).
    pub fn with_probes(watch_id: String, named: &[Routine], probes: Vec<Routine>) -> Self {
        let mut names: Vec<WatchedName> = named
            .iter()
            .map(|r| WatchedName {
                schema: r.identity.schema.clone(),
                name: r.identity.name.clone(),
            })
            .collect();
        names.sort();
        names.dedup();
        WatchSampleSpec {
            watch_id,
            names,
            probes,
            sources: Vec::new(),
        }
    }
}

fn invalid(field: String, reason: &str) -> InvalidField {
    InvalidField {
        field,
        reason: reason.into(),
    }
}

impl TryFrom<proto::WatchSampleJob> for WatchSampleSpec {
    type Error = InvalidField;

    fn try_from(wire: proto::WatchSampleJob) -> Result<Self, Self::Error> {
        if wire.names.is_empty() || wire.names.len() > MAX_WATCHED_NAMES {
            return Err(invalid(
                "watch_sample.names".into(),
                "must name 1 to 1000 routines",
            ));
        }
        let identifier = |value: &str| {
            !value.is_empty()
                && value.len() <= MAX_IDENTIFIER_BYTES
                && !value.chars().any(char::is_control)
        };
        let mut names = Vec::with_capacity(wire.names.len());
        for (index, name) in wire.names.into_iter().enumerate() {
            if !identifier(&name.schema) || !identifier(&name.name) {
                return Err(invalid(
                    format!("watch_sample.names[{index}]"),
                    "not a schema and routine name",
                ));
            }
            names.push(WatchedName {
                schema: name.schema,
                name: name.name,
            });
        }
        names.sort();
        names.dedup();
        Ok(WatchSampleSpec {
            watch_id: wire.watch_id,
            names,
            // No probe at all is valid: a name with nothing approved to
            // probe it is still sampled (`routines_from_wire` wants a plan's
            // at least one routine).
            probes: if wire.probes.is_empty() {
                Vec::new()
            } else {
                routines_from_wire(wire.probes)?
            },
            sources: sources_from_wire(wire.source_plans)?,
        })
    }
}

impl From<WatchSampleSpec> for proto::WatchSampleJob {
    fn from(spec: WatchSampleSpec) -> Self {
        proto::WatchSampleJob {
            watch_id: spec.watch_id,
            names: spec
                .names
                .into_iter()
                .map(|n| proto::WatchedName {
                    schema: n.schema,
                    name: n.name,
                })
                .collect(),
            probes: spec.probes.into_iter().map(Into::into).collect(),
            source_plans: spec.sources.into_iter().map(Into::into).collect(),
        }
    }
}
