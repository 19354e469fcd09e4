#!/usr/bin/env python3
"""Generates a procedure project shaped like real extension code (issue 15),
for deploy/bench/realistic-1000.sh:

- unqualified code living in its own schema `lib` (pgrollout.toml declares
  schema `lib` and search path `lib, types`), bodies calling siblings
  unqualified;
- overload families `fam_N(text | anyelement | VARIADIC text[] | integer,
  integer)` whose members call each other, and call earlier families;
- polymorphic (`anyarray`, `anyelement`) and variadic (`VARIADIC integer[]`)
  signatures;
- types from another schema (`types.money_t`, `types.level`) as parameter,
  return and DECLAREd variable types, in SQL and PL/pgSQL;
- a few files in schema `util` (a sidecar's `[schema]`), called qualified;
- plain `CREATE FUNCTION` (no OR REPLACE) in every fifth file;
- grants on every file, smoke tests (unqualified calls) on some.

Writes <out>/project (pgrollout.toml, procedures/*.sql|toml), <out>/list.txt
(every name, shuffled), <out>/setup.sql (schemas, types, role: what the
target holds before any deploy) and <out>/plain.sql (the same definitions
and grants in a valid order, with the search path set as the project
declares it, for `psql -1 -f`). Seeded: every run generates the same corpus.

  generate_realistic.py ROUTINES OUT [--without SHAPE,...]

SHAPE is one of: family, plpgsql-foreign-types, plain-create, util — to
measure what a build can deploy while a shape is not supported yet."""

import argparse
import random
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("routines", type=int)
parser.add_argument("out", type=Path)
parser.add_argument("--without", default="")
args = parser.parse_args()
without = {s for s in args.without.split(",") if s}
unknown = without - {"family", "plpgsql-foreign-types", "plain-create", "util"}
if unknown:
    parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")

rng = random.Random(20261203)
project = args.out / "project"
procedures = project / "procedures"
procedures.mkdir(parents=True, exist_ok=True)
(project / "pgrollout.toml").write_text(
    "# The library lives in its own schema and is written for this search path.\n"
    '[schema]\nname = "lib"\nsearch_path = ["lib", "types"]\n'
)
(args.out / "setup.sql").write_text(
    "CREATE SCHEMA IF NOT EXISTS lib;\nCREATE SCHEMA IF NOT EXISTS util;\n"
    "CREATE SCHEMA IF NOT EXISTS types;\n"
    "CREATE TYPE types.money_t AS (amount numeric, currency text);\n"
    "CREATE TYPE types.level AS ENUM ('low', 'mid', 'high');\n"
    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') "
    "THEN CREATE ROLE bench_app; END IF; END $$;\n"
)

LIB_PATH = "SET search_path = lib, types;"
UTIL_PATH = "SET search_path = util;"

# What earlier files offer to later ones: (kind, name).
calcs, families, utils = [], [], []
plain = [LIB_PATH]
names = []
routines = 0
index = 0


def create(n):
    """Every fifth file is written with plain CREATE, as much real code is."""
    if "plain-create" not in without and n % 5 == 4:
        return "CREATE FUNCTION"
    return "CREATE OR REPLACE FUNCTION"


def calc_expression(variable):
    """A few calls of earlier routines, unqualified (or util's, qualified)."""
    terms = []
    for callee in rng.sample(calcs, k=min(len(calcs), rng.randint(0, 2))):
        terms.append(f"{callee}({variable})")
    if families and rng.random() < 0.3:
        terms.append(f"length({rng.choice(families)}({variable}))")
    if utils and rng.random() < 0.1:
        terms.append(f"util.{rng.choice(utils)}({variable})")
    return " + ".join(terms) or variable


while routines < args.routines:
    kind = index % 12
    cr = create(index)
    statements, smoke, schema_table, in_util = [], None, "", False
    if kind in (0, 6) and "family" not in without:
        name = f"fam_{index:04d}"
        other = f"{rng.choice(families)}($1::text || $2::text)" if families else "$1::text || $2::text"
        statements = [
            f"{cr} {name}(t text) RETURNS text LANGUAGE sql IMMUTABLE\nAS $$ SELECT 'v:' || t $$;",
            f"{cr} {name}(v anyelement) RETURNS text LANGUAGE sql IMMUTABLE\nAS $$ SELECT {name}(v::text) $$;",
            f"{cr} {name}(VARIADIC parts text[]) RETURNS text LANGUAGE sql IMMUTABLE\n"
            f"AS $$ SELECT {name}(array_to_string(parts, ',')) $$;",
            f"{cr} {name}(a integer, b integer) RETURNS text LANGUAGE plpgsql IMMUTABLE\n"
            f"AS $$\nBEGIN\n  RETURN {name}({other});\nEND\n$$;",
        ]
        smoke = (f"SELECT {name}(1, 2) AS answer", "text", f"{name}(integer, integer)")
        families.append(name)
    elif kind == 1:
        name = f"pick_{index:04d}"
        statements = [
            f"{cr} {name}(items anyarray, at_index integer) RETURNS anyelement LANGUAGE sql IMMUTABLE\n"
            f"AS $$ SELECT items[at_index] $$;",
            f"{cr} {name}(items anyarray) RETURNS anyelement LANGUAGE sql IMMUTABLE\n"
            f"AS $$ SELECT {name}(items, array_lower(items, 1)) $$;",
        ]
        smoke = (f"SELECT {name}(ARRAY[3, 4]) AS answer", "integer", f"{name}(anyarray)")
    elif kind == 2:
        name = f"total_{index:04d}"
        statements = [
            f"{cr} {name}(VARIADIC xs integer[]) RETURNS integer LANGUAGE sql STABLE\n"
            f"AS $$ SELECT (coalesce(sum(x), 0)::integer + {calc_expression('0')}) % 1000003 FROM unnest(xs) AS x $$;"
        ]
        smoke = (f"SELECT {name}(1, 2, 3) AS answer", "integer", None)
    elif kind == 3:
        name = f"money_{index:04d}"
        statements = [
            f"{cr} {name}(m types.money_t) RETURNS types.money_t LANGUAGE sql IMMUTABLE\n"
            f"AS $$ SELECT ROW((m).amount * 2, (m).currency)::types.money_t $$;",
            f"{cr} {name}(amount numeric, currency text DEFAULT 'EUR') RETURNS types.money_t LANGUAGE sql IMMUTABLE\n"
            f"AS $$ SELECT {name}(ROW(amount, currency)::types.money_t) $$;",
        ]
        smoke = (f"SELECT ({name}(1.5)).amount AS answer", "numeric", f"{name}(numeric, text)")
    elif kind == 9 and "plpgsql-foreign-types" not in without:
        name = f"level_{index:04d}"
        statements = [
            f"{cr} {name}(l types.level) RETURNS types.level LANGUAGE plpgsql IMMUTABLE\n"
            f"AS $$\nDECLARE\n  following types.level;\nBEGIN\n"
            f"  following := CASE l WHEN 'low' THEN 'mid' ELSE 'high' END;\n  RETURN following;\nEND\n$$;"
        ]
    elif kind == 11 and "util" not in without:
        name = f"norm_{index:04d}"
        in_util = True
        schema_table = '[schema]\nname = "util"\n'
        statements = [
            f"{cr} {name}(x integer) RETURNS integer LANGUAGE sql IMMUTABLE\nAS $$ SELECT abs(x) % 97 $$;"
        ]
        utils.append(name)
    else:
        name = f"calc_{index:04d}"
        # Every call goes one step down (x - 1): a call tree stays shallow.
        if index % 2 == 0:
            statements = [
                f"{cr} {name}(x integer) RETURNS integer LANGUAGE sql STABLE\n"
                f"AS $$ SELECT CASE WHEN x > 0 THEN ({calc_expression('x - 1')}) % 1000003 ELSE {index} END $$;"
            ]
        else:
            body = calc_expression("x - 1")
            statements = [
                f"{cr} {name}(x integer) RETURNS integer LANGUAGE plpgsql STABLE\n"
                f"AS $$\nDECLARE\n  total integer := {index};\nBEGIN\n"
                f"  IF x > 0 THEN total := total + ({body}); END IF;\n  RETURN total % 1000003;\nEND\n$$;"
            ]
        smoke = (f"SELECT {name}(2) AS answer", "integer", None)
        calcs.append(name)
    if routines + len(statements) > args.routines and routines > 0:
        statements = statements[: args.routines - routines]
        smoke = None
    (procedures / f"{name}.sql").write_text("\n\n".join(statements) + "\n")
    sidecar = schema_table + '[[grants]]\nprivilege = "EXECUTE"\nto = ["bench_app"]\n'
    if smoke and index % 4 == 0:
        call, answer_type, routine = smoke
        which = f'routine = "{routine}"\n' if routine and len(statements) > 1 else ""
        sidecar += (
            f'[[smoke_tests]]\nname = "answers"\n{which}call = "{call}"\n'
            f'expect_columns = [ {{ name = "answer", type = "{answer_type}" }} ]\n'
        )
    (procedures / f"{name}.toml").write_text(sidecar)
    if in_util:
        plain.append(UTIL_PATH)
    plain.extend(statements)
    if in_util:
        plain.append(LIB_PATH)
    names.append(name)
    routines += len(statements)
    index += 1

shuffled = names[:]
rng.shuffle(shuffled)
(args.out / "list.txt").write_text("\n".join(shuffled) + "\n")
# The same ACL as the sidecars' grants give every routine, in one statement.
plain.append("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA lib, util TO bench_app;")
(args.out / "plain.sql").write_text("\n\n".join(plain) + "\n")
print(f"{routines} routines in {len(names)} files: {args.out}")
