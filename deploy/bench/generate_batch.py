#!/usr/bin/env python3
"""Generates a procedure project of N interdependent routines for the batch
benchmark: mixed SQL-language and PL/pgSQL functions calling earlier ones,
some overloads, a grant on every routine and a smoke test on a tenth.

Writes <out>/project/procedures/*.sql|toml, <out>/list.txt (shuffled names)
and <out>/plain.sql (the same definitions and grants in a valid order, for
`psql -1 -f`). Seeded, so every run generates the same batch."""

import random
import sys
from pathlib import Path

count, out = int(sys.argv[1]), Path(sys.argv[2])
rng = random.Random(20261127)
procedures = out / "project" / "procedures"
procedures.mkdir(parents=True, exist_ok=True)

names, plain, routines = [], [], 0
index = 0
while routines < count:
    name = f"f{index:04d}"
    callees = rng.sample(names, k=min(len(names), rng.randint(1, 3))) if names else []
    statements = []
    if index % 2 == 0:
        expression = " + ".join(f"bench.{c}(x)" for c in callees) or "x"
        statements.append(
            f"CREATE OR REPLACE FUNCTION bench.{name}(x integer) RETURNS integer\n"
            f"LANGUAGE sql STABLE\nAS $$ SELECT ({expression}) % 1000003 $$;"
        )
    else:
        calls = "\n".join(f"  IF x > 0 THEN total := total + bench.{c}(x - 1); END IF;" for c in callees)
        statements.append(
            f"CREATE OR REPLACE FUNCTION bench.{name}(x integer) RETURNS integer\n"
            f"LANGUAGE plpgsql STABLE\nAS $$\nDECLARE\n  total integer := {index};\nBEGIN\n{calls}\n"
            f"  RETURN total % 1000003;\nEND\n$$;"
        )
    if index % 10 == 3 and routines + 1 < count:
        # An overload in the same file.
        statements.append(
            f"CREATE OR REPLACE FUNCTION bench.{name}(x integer, y integer) RETURNS integer\n"
            f"LANGUAGE sql STABLE\nAS $$ SELECT bench.{name}(x) + y $$;"
        )
    (procedures / f"{name}.sql").write_text("\n\n".join(statements) + "\n")
    sidecar = '[[grants]]\nprivilege = "EXECUTE"\nto = ["bench_app"]\n'
    if index % 10 == 0:
        routine = f'routine = "bench.{name}(integer)"\n' if len(statements) > 1 else ""
        sidecar += (
            f'[[smoke_tests]]\nname = "answers"\n{routine}call = "SELECT bench.{name}(2) AS answer"\n'
            'expect_columns = [ { name = "answer", type = "integer" } ]\n'
        )
    (procedures / f"{name}.toml").write_text(sidecar)
    plain.extend(statements)
    signatures = ["(integer)", "(integer, integer)"][: len(statements)]
    plain.extend(f"GRANT EXECUTE ON FUNCTION bench.{name}{s} TO bench_app;" for s in signatures)
    names.append(name)
    routines += len(statements)
    index += 1

shuffled = names[:]
rng.shuffle(shuffled)
(out / "list.txt").write_text("# generated benchmark batch, shuffled on purpose\n" + "\n".join(shuffled) + "\n")
(out / "plain.sql").write_text("\n".join(plain) + "\n")
print(f"{routines} routines in {len(names)} files")
