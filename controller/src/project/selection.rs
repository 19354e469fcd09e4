//! A batch's routines taken out of the loaded project: each listed name's
//! routines in list order, each once. A batch selects hundreds; cloning
//! each routine and then dropping the project cost the CLI 2.5–4 ms at a
//! thousand routines, before anything went to the controller (issue 15
//! item 9).

use std::collections::HashSet;

use pgrollout_shared::routine::Routine;

use super::error::{ProjectError, ProjectWarning};
use super::Project;

/// What a list of names selected.
#[derive(Debug, Default)]
pub struct Selection {
    /// In list order; a routine named twice (or by its name and by one of
    /// its overloads) comes once, where it was first named.
    pub routines: Vec<Routine>,
    /// `(position in the list, why that name selected nothing)`.
    pub problems: Vec<(usize, ProjectError)>,
    /// The project's warnings about the selected routines.
    pub warnings: Vec<ProjectWarning>,
}

impl Project {
    /// The routines each of `names` designates ([`Project::select`]),
    /// moved out of the project.
    pub fn into_selection(mut self, names: &[String]) -> Selection {
        if self.partial_root.is_some() {
            // A few names, a partial load: a name not found may need the
            // whole project, which `select` loads.
            return self.cloned_selection(names);
        }
        let mut problems = Vec::new();
        let mut taken = vec![false; self.routines.len()];
        let mut chosen = Vec::new();
        for (position, name) in names.iter().enumerate() {
            match self.select_loaded(name) {
                Ok(indices) => {
                    for index in indices {
                        if !std::mem::replace(&mut taken[index], true) {
                            chosen.push(index);
                        }
                    }
                }
                Err(error) => problems.push((position, error)),
            }
        }
        let mut slots: Vec<Option<Routine>> = std::mem::take(&mut self.routines)
            .into_iter()
            .map(Some)
            .collect();
        let routines: Vec<Routine> = chosen
            .into_iter()
            .filter_map(|index| slots[index].take())
            .collect();
        let warnings = self.take_warnings_for(&routines);
        Selection {
            routines,
            problems,
            warnings,
        }
    }

    fn cloned_selection(mut self, names: &[String]) -> Selection {
        let mut selection = Selection::default();
        let mut taken = HashSet::new();
        for (position, name) in names.iter().enumerate() {
            match self.select(name) {
                Ok(found) => selection.routines.extend(
                    found
                        .into_iter()
                        .filter(|routine| taken.insert(routine.identity.clone())),
                ),
                Err(error) => selection.problems.push((position, error)),
            }
        }
        selection.warnings = self.take_warnings_for(&selection.routines);
        selection
    }

    fn take_warnings_for(&mut self, routines: &[Routine]) -> Vec<ProjectWarning> {
        let of_selected: HashSet<(&str, u32)> = routines
            .iter()
            .map(|routine| (routine.source_path.as_str(), routine.source_line))
            .collect();
        std::mem::take(&mut self.warnings)
            .into_iter()
            .filter(|warning| {
                warning
                    .at
                    .line
                    .is_some_and(|line| of_selected.contains(&(warning.at.path.as_str(), line)))
            })
            .collect()
    }
}
