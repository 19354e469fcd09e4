//! Names and messages from projects, databases, agents and operators are
//! data (issue 13): an audit entry is stored with its control characters
//! written out (`pgrollout_shared::text`), so no reader's terminal obeys them.

use pgrollout_shared::text::escape_in_place;

use super::AuditEntry;

impl AuditEntry {
    /// The entry with every field's control characters escaped.
    pub fn escaped(mut self) -> Self {
        let AuditEntry {
            actor,
            action,
            outcome,
            rollout_id,
            environment,
            procedure,
            trace_id,
            details,
        } = &mut self;
        for text in [actor, action, outcome, details]
            .into_iter()
            .chain(rollout_id.as_mut())
            .chain(environment.as_mut())
            .chain(procedure.as_mut())
            .chain(trace_id.as_mut())
        {
            escape_in_place(text);
        }
        self
    }
}
