#!/usr/bin/env python3
"""Report import cycles between the files of one Rust crate.

Usage: deploy/check-import-cycles.py CRATE_SRC_DIR [--allow DIR ...]

Every file is a module (src/main.rs or src/lib.rs is the root, a/mod.rs is
`a`, a/b.rs is `a::b`, and `mod c;` inside a/b.rs is a/b/c.rs). A file depends
on another when it names it through `crate::`, `super::`, `self::` or a child
module's name, in a `use` or in a path in code; the longest prefix of the path
that is a file is the file it depends on. Test modules (`#[cfg(test)] mod
tests { ... }`) are not dependencies of the code and are left out. A `pub use`
is followed to the file that defines the item, so a folder's `mod.rs` that
re-exports its children is its surface, not a party to its children's
dependencies (and its re-export of a child is not an edge).

The cycles printed are the strongly connected components of that graph with
more than one file. `--allow DIR` marks a cycle whose files all sit directly in
DIR (relative to the crate's src) as one module split over files: it is still
printed, but does not fail the check. Then the same graph by concern (a
top-level folder of src, or a root file): any cycle there fails the check.
Exit code 1 when a cycle that is not allowed remains.
Reused for the controller: point it at controller/src.
"""

import os
import re
import sys


def strip_comments_and_strings(text):
    """Blank out comments, string and char literals so paths in them don't count."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = len(re.match(r'r(#*)"', text[i:]).group(1))
            end = '"' + "#" * hashes
            j = text.find(end, i + 2 + hashes)
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:i + 4])
            i += len(m.group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_modules(text):
    """Drop `#[cfg(test)] mod name { ... }` blocks (braces balanced)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[:m.start()] + text[i:]


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    # An alias (`x as y`) is marked before whitespace goes, so a module whose
    # name starts with "as" (`assess`) is not mistaken for one.
    tree = re.sub(r"\s+as\s+(\w+)", r"@\1", tree)
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [re.sub(r"@\w+$", "", tree)] if tree else []
    prefix = tree[:i]
    body = tree[i + 1:tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    result = []
    for part in parts:
        for sub in expand_use_tree(part):
            result.append(prefix + sub if sub != "self" else prefix.rstrip(":"))
    return result


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path tuple -> file path (relative to src)
        self.reexports = {}  # file -> {name: path it re-exports, as written}
        self.modules = {}  # file -> module path tuple
        root = "main.rs" if os.path.exists(os.path.join(src, "main.rs")) else "lib.rs"
        self._load((), root)

    def _children_dir(self, rel):
        base = os.path.dirname(rel)
        name = os.path.basename(rel)
        if name in ("main.rs", "lib.rs", "mod.rs"):
            return base
        return os.path.join(base, name[:-3])

    def _load(self, module, rel):
        self.files[module] = rel
        self.modules[rel] = module
        text = strip_comments_and_strings(open(os.path.join(self.src, rel)).read())
        names = {}
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            for p in expand_use_tree(m.group(1)):
                names[p.split("::")[-1]] = p
        self.reexports[rel] = names
        # A `#[cfg(test)] mod x;` file is test code: its imports are not
        # part of what the program's modules depend on.
        for m in re.finditer(
            r"^(\s*#\[cfg\(test\)\])?\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M
        ):
            if m.group(1):
                continue
            child = m.group(2)
            d = self._children_dir(rel)
            for cand in (os.path.join(d, child + ".rs"), os.path.join(d, child, "mod.rs")):
                if os.path.exists(os.path.join(self.src, cand)):
                    self._load(module + (child,), cand)
                    break

    def resolve(self, module, path, depth=0):
        """The file a path used in `module` names, or None when outside the crate."""
        segs = [s for s in path.split("::") if s]
        if not segs:
            return None
        if segs[0] == "crate":
            cur, segs = (), segs[1:]
        elif segs[0] in ("super", "self"):
            cur = module
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    cur = cur[:-1]
                segs = segs[1:]
        elif module + (segs[0],) in self.files:
            cur = module
        else:
            return None
        for i, s in enumerate(segs):
            if cur + (s,) in self.files:
                cur = cur + (s,)
                continue
            # An item the module re-exports: the file that defines it.
            via = self.reexports[self.files[cur]].get(s)
            if via is not None and depth < 10:
                inner = self.resolve(cur, via, depth + 1)
                return inner
            break
        return self.files[cur]

    def edges(self):
        graph = {}
        for module, rel in self.files.items():
            text = open(os.path.join(self.src, rel)).read()
            text = strip_test_modules(strip_comments_and_strings(text))
            children = {m[-1] for m in self.files if len(m) == len(module) + 1 and m[:-1] == module}
            paths = []
            for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
                for p in expand_use_tree(m.group(2)):
                    target = self.resolve(module, p.replace("::*", ""))
                    if m.group(1) and target and self.modules[target][:len(module)] == module:
                        continue  # a folder's surface re-exporting its own child
                    paths.append(p)
            # A module brought in by `use` (`use crate::jobs;`) and named in
            # code (`jobs::execute`) is a dependency too.
            aliases = {p.split("::")[-1]: p for p in list(paths)}
            code = re.sub(r"\b(pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", "", text)
            for m in re.finditer(r"(?<![\w:])((?:crate|super|self|\w+)(?:::\w+)+)", code):
                first, _, rest = m.group(1).partition("::")
                if first in ("crate", "super", "self") or first in children:
                    paths.append(m.group(1))
                elif first in aliases:
                    paths.append(aliases[first] + "::" + rest)
            deps = set()
            for p in paths:
                target = self.resolve(module, p.replace("::*", ""))
                if target and target != rel:
                    deps.add(target)
            graph[rel] = deps
        return graph


def cycles(graph):
    """Tarjan's strongly connected components with more than one file."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                result.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(result, key=lambda c: (-len(c), c))


def main(argv):
    args = argv[1:]
    allowed = []
    while "--allow" in args:
        i = args.index("--allow")
        allowed.append(args[i + 1].rstrip("/"))
        del args[i:i + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    crate = Crate(args[0])
    graph = crate.edges()
    failing = 0
    found = cycles(graph)
    for comp in found:
        dirs = {os.path.dirname(f) for f in comp}
        ok = len(dirs) == 1 and dirs.pop() in allowed
        failing += 0 if ok else 1
        print(("allowed " if ok else "cycle   ") + f"({len(comp)} files): " + " ".join(comp))
        for f in comp:
            inner = sorted(d for d in graph[f] if d in comp)
            print(f"    {f} -> {', '.join(inner)}")
    # The same graph by concern: a top-level folder of src, or a file at its
    # root. Two concerns that import each other are a cycle whatever files
    # carry it (e.g. link/mod.rs -> jobs/mod.rs -> link/outbox.rs).
    def concern(f):
        return f.split("/")[0] if "/" in f else f
    folders = {}
    for f, deps in graph.items():
        folders.setdefault(concern(f), set()).update(concern(d) for d in deps if concern(d) != concern(f))
    between = cycles(folders)
    for comp in between:
        failing += 1
        print(f"concerns ({len(comp)}): " + " ".join(comp))
        for c in comp:
            print(f"    {c} -> {', '.join(sorted(d for d in folders[c] if d in comp))}")
    print(f"{len(found)} file cycle(s), {len(between)} concern cycle(s), {failing} not allowed, {len(graph)} files")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
