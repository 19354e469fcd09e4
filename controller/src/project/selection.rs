//! A batch's routines taken out of the loaded project: each listed name's
//! routines in list order, each once. A batch selects hundreds; cloning
//! each routine and then dropping the project cost the CLI 2.5–4 ms at a
//! thousand routines, before anything went to the controller (issue 15
//! item 9).

use std::collections::HashSet;

use pgrollout_shared::routine::Routine;

use super::error::{ProjectError, ProjectWarning};
use super::{Project, WarningsAbout};

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
        let about = WarningsAbout::routines(routines);
        std::mem::take(&mut self.warnings)
            .into_iter()
            .filter(|warning| about.includes(warning))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Project, ProjectError, PROCEDURES_DIR};
    use super::Selection;

    /// Two overloads in one file, a routine with a warning, a plain one, and
    /// a file no listed name mentions (with a warning of its own).
    fn project() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        let procedures = root.path().join(PROCEDURES_DIR);
        std::fs::create_dir(&procedures).expect("procedures dir");
        let files = [
            (
                "greet.sql",
                "CREATE FUNCTION greet(who text) RETURNS text LANGUAGE sql AS $$ SELECT who $$;\n\
                 CREATE FUNCTION greet(who text, times int) RETURNS text LANGUAGE sql \
                 AS $$ SELECT repeat(who, times) $$;\n",
            ),
            (
                "other.sql",
                "CREATE FUNCTION other() RETURNS int LANGUAGE plpgsql AS $$\n\
                 DECLARE v elsewhere.t;\nBEGIN RETURN 1; END $$;\n",
            ),
            (
                "third.sql",
                "CREATE FUNCTION third() RETURNS int LANGUAGE sql AS $$ SELECT 3 $$;\n",
            ),
            (
                "unlisted.sql",
                "CREATE FUNCTION unlisted() RETURNS int LANGUAGE plpgsql AS $$\n\
                 DECLARE v elsewhere.t;\nBEGIN RETURN 1; END $$;\n",
            ),
        ];
        for (name, text) in files {
            std::fs::write(procedures.join(name), text).expect("write");
        }
        root
    }

    fn names() -> Vec<String> {
        [
            "greet(text, integer)",
            "other",
            "greet",
            "nope",
            "GREET",
            "third",
        ]
        .map(String::from)
        .to_vec()
    }

    /// What the operator sees of a selection: the routines in order, the
    /// problems by list position, the warnings' places.
    fn shown(selection: &Selection) -> (Vec<String>, Vec<(usize, bool)>, Vec<String>) {
        (
            selection
                .routines
                .iter()
                .map(|routine| routine.identity.to_string())
                .collect(),
            selection
                .problems
                .iter()
                .map(|(position, error)| {
                    (
                        *position,
                        matches!(error, ProjectError::UnknownProcedure { .. }),
                    )
                })
                .collect(),
            selection
                .warnings
                .iter()
                .map(|warning| warning.at.to_string())
                .collect(),
        )
    }

    #[test]
    fn each_routine_comes_once_in_list_order_with_its_problems_and_warnings() {
        let root = project();
        let (routines, problems, warnings) = shown(
            &Project::load(root.path())
                .expect("loads")
                .into_selection(&names()),
        );
        // A name and one of its overloads, or a name twice in another case,
        // add each routine once, where it was first named.
        assert_eq!(
            routines,
            [
                "public.greet(text, integer)",
                "public.other()",
                "public.greet(text)",
                "public.third()"
            ]
        );
        assert_eq!(problems, [(3, true)], "the unknown name, at its position");
        // Only the selected routines' warnings: not unlisted()'s.
        assert_eq!(warnings, ["procedures/other.sql:1:1"]);
    }

    #[test]
    fn a_partial_load_selects_the_same() {
        let root = project();
        let full = shown(
            &Project::load(root.path())
                .expect("loads")
                .into_selection(&names()),
        );
        // A few names load only the files that mention them: unlisted.sql
        // is not parsed, and a name not found there sends the selection to
        // the whole project.
        let partial = Project::load_for(root.path(), &names()).expect("loads");
        assert!(partial.files_loaded() < partial.files_total());
        assert_eq!(shown(&partial.into_selection(&names())), full);
    }
}
