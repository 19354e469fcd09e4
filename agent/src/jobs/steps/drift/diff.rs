//! Unified diffs of what the ledger recorded (`---`) against what is live
//! (`+++`), line by line, with three lines of context — what `diff -u` would
//! print, so an operator reads it the usual way. Definitions are short; the
//! longest-common-subsequence table is bounded, and past the bound the diff
//! shows the whole text replaced rather than take the agent's memory.

/// Lines of context around each change.
const CONTEXT: usize = 3;
/// Beyond this many table cells (lines × lines) the diff is not minimised.
const MAX_CELLS: usize = 4_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// `diff -u ledger live` of two texts split into lines; empty when equal.
pub fn unified(recorded: &[&str], live: &[&str]) -> String {
    if recorded == live {
        return String::new();
    }
    let ops = edit_script(recorded, live);
    let mut out = String::from("--- ledger\n+++ live\n");
    // Walk the script, keeping each line's position on both sides.
    let mut positions = Vec::with_capacity(ops.len());
    let (mut a, mut b) = (0usize, 0usize);
    for op in &ops {
        positions.push((a, b));
        match op {
            Op::Same => {
                a += 1;
                b += 1;
            }
            Op::Removed => a += 1,
            Op::Added => b += 1,
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&i| ops[i] != Op::Same).collect();
    let mut index = 0;
    while index < changed.len() {
        let start = changed[index].saturating_sub(CONTEXT);
        let mut end = changed[index];
        // A hunk runs on while the next change is within twice the context.
        while index + 1 < changed.len() && changed[index + 1] <= end + 2 * CONTEXT + 1 {
            index += 1;
            end = changed[index];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let (a_start, b_start) = positions[start];
        let a_len = ops[start..end]
            .iter()
            .filter(|op| **op != Op::Added)
            .count();
        let b_len = ops[start..end]
            .iter()
            .filter(|op| **op != Op::Removed)
            .count();
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(a_start, a_len),
            range(b_start, b_len)
        ));
        for i in start..end {
            let (a, b) = positions[i];
            match ops[i] {
                Op::Same => out.push_str(&format!(" {}\n", recorded[a])),
                Op::Removed => out.push_str(&format!("-{}\n", recorded[a])),
                Op::Added => out.push_str(&format!("+{}\n", live[b])),
            }
        }
        index += 1;
    }
    out
}

/// `diff -u`'s hunk range: 1-based start, and the length unless it is 1.
fn range(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{len}", start + 1),
    }
}

/// The shortest edit script from `a` to `b` by longest common subsequence.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    // Common head and tail need no table.
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops = vec![Op::Same; head];
    if (mid_a.len() + 1) * (mid_b.len() + 1) > MAX_CELLS {
        ops.extend(std::iter::repeat_n(Op::Removed, mid_a.len()));
        ops.extend(std::iter::repeat_n(Op::Added, mid_b.len()));
    } else {
        ops.extend(lcs_script(mid_a, mid_b));
    }
    ops.extend(std::iter::repeat_n(Op::Same, tail));
    ops
}

fn lcs_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    let width = b.len() + 1;
    // lengths[i * width + j]: LCS length of a[i..] and b[j..].
    let mut lengths = vec![0u32; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lengths[i * width + j] = if a[i] == b[j] {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(a.len() + b.len());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push(Op::Same);
            i += 1;
            j += 1;
        } else if i < a.len()
            && (j == b.len() || lengths[(i + 1) * width + j] >= lengths[i * width + j + 1])
        {
            // Removals before additions, as `diff -u` prints a changed line.
            ops.push(Op::Removed);
            i += 1;
        } else {
            ops.push(Op::Added);
            j += 1;
        }
    }
    ops
}

/// The items of an `aclitem[]` text (`{a=X/b,"x y"=X/b}`), each as
/// PostgreSQL writes it, sorted: the order of items is not a privilege, and
/// a dump/restore may grant them in another order. The scan writes a NULL
/// ACL out with `acldefault`; `None` is left only when the recorded owner no
/// longer exists, and is then one pseudo-item.
pub fn acl_items(acl: Option<&str>) -> Vec<String> {
    let Some(acl) = acl else {
        return vec!["(default privileges)".to_owned()];
    };
    let inner = acl
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => current.extend(chars.next()),
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        items.push(current);
    }
    items.sort();
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified(&["a", "b"], &["a", "b"]), "");
    }

    #[test]
    fn a_changed_line_is_one_hunk_with_context() {
        let old = ["1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let new = ["1", "2", "3", "4", "five", "6", "7", "8", "9"];
        assert_eq!(
            unified(&old, &new),
            "--- ledger\n+++ live\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn an_added_line_at_the_end() {
        assert_eq!(
            unified(&["a"], &["a", "b"]),
            "--- ledger\n+++ live\n@@ -1 +1,2 @@\n a\n+b\n"
        );
    }

    #[test]
    fn far_apart_changes_are_two_hunks() {
        let old: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let mut new = old.clone();
        new[1] = "x".into();
        new[18] = "y".into();
        let old: Vec<&str> = old.iter().map(String::as_str).collect();
        let new: Vec<&str> = new.iter().map(String::as_str).collect();
        assert_eq!(unified(&old, &new).matches("@@ -").count(), 2);
    }

    #[test]
    fn acl_items_are_split_unquoted_and_sorted() {
        assert_eq!(
            acl_items(Some(
                "{postgres=X/postgres,\"my role\"=X/postgres,=X/postgres}"
            )),
            vec!["=X/postgres", "my role=X/postgres", "postgres=X/postgres"]
        );
        assert_eq!(acl_items(None), vec!["(default privileges)"]);
    }
}
