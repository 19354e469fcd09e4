//! The token reader (`header_tokens.rs`) held equal to the tree: every file
//! below is read both ways and must give the same routines — identities,
//! statements, warnings, spans — or the same error, to the byte. The files
//! the reader should take must have been taken by it, so no case passes by
//! falling back.

use pg_query::protobuf::ScanToken;

use super::header_tokens::read_creates;
use super::parse_sql::{parse_file, statements_from_tokens, Reader};

/// Shapes the token reader reads itself: the realistic benchmark corpus's
/// (issue 15), and the headers people write.
const TAKEN: &[&str] = &[
    // The corpus: plain CREATE, overload families calling each other,
    // polymorphic and variadic arguments, types of another schema, PL/pgSQL
    // the offline parse cannot judge, defaults.
    "CREATE FUNCTION calc_0004(x integer) RETURNS integer LANGUAGE sql STABLE\n\
     AS $$ SELECT CASE WHEN x > 0 THEN (length(fam_0000(x - 1))) % 1000003 ELSE 4 END $$;\n",
    "CREATE OR REPLACE FUNCTION calc_0005(x integer) RETURNS integer LANGUAGE plpgsql STABLE\n\
     AS $$\nDECLARE\n  total integer := 5;\nBEGIN\n  IF x > 0 THEN total := total + calc_0004(x - 1); END IF;\n  \
     RETURN total % 1000003;\nEND\n$$;\n",
    "CREATE OR REPLACE FUNCTION fam_0012(t text) RETURNS text LANGUAGE sql IMMUTABLE\n\
     AS $$ SELECT 'v:' || t $$;\n\n\
     CREATE OR REPLACE FUNCTION fam_0012(v anyelement) RETURNS text LANGUAGE sql IMMUTABLE\n\
     AS $$ SELECT fam_0012(v::text) $$;\n\n\
     CREATE OR REPLACE FUNCTION fam_0012(VARIADIC parts text[]) RETURNS text LANGUAGE sql IMMUTABLE\n\
     AS $$ SELECT fam_0012(array_to_string(parts, ',')) $$;\n\n\
     CREATE OR REPLACE FUNCTION fam_0012(a integer, b integer) RETURNS text LANGUAGE plpgsql IMMUTABLE\n\
     AS $$\nBEGIN\n  RETURN fam_0012($1::text || $2::text);\nEND\n$$;\n",
    "CREATE OR REPLACE FUNCTION level_0021(l types.level) RETURNS types.level LANGUAGE plpgsql IMMUTABLE\n\
     AS $$\nDECLARE\n  following types.level;\nBEGIN\n  following := CASE l WHEN 'low' THEN 'mid' ELSE 'high' END;\n  \
     RETURN following;\nEND\n$$;\n",
    "CREATE OR REPLACE FUNCTION money_0003(m types.money_t) RETURNS types.money_t LANGUAGE sql IMMUTABLE\n\
     AS $$ SELECT ROW((m).amount * 2, (m).currency)::types.money_t $$;\n\n\
     CREATE OR REPLACE FUNCTION money_0003(amount numeric, currency text DEFAULT 'EUR') RETURNS types.money_t \
     LANGUAGE sql IMMUTABLE\nAS $$ SELECT money_0003(ROW(amount, currency)::types.money_t) $$;\n",
    "CREATE OR REPLACE FUNCTION pick_0001(items anyarray, at_index integer) RETURNS anyelement LANGUAGE sql \
     IMMUTABLE\nAS $$ SELECT items[at_index] $$;\n\n\
     CREATE OR REPLACE FUNCTION pick_0001(items anyarray) RETURNS anyelement LANGUAGE sql IMMUTABLE\n\
     AS $$ SELECT pick_0001(items, array_lower(items, 1)) $$;\n",
    "CREATE OR REPLACE FUNCTION total_0002(VARIADIC xs integer[]) RETURNS integer LANGUAGE sql STABLE\n\
     AS $$ SELECT coalesce(sum(x), 0)::integer FROM unnest(xs) AS x $$;\n",
    // A PL/pgSQL VARIADIC argument: the marker is blanked for the offline
    // compile by the parameter's and its type's locations.
    "CREATE FUNCTION v(VARIADIC xs int[]) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN array_length(xs, 1); END $$;",
    // Qualified and quoted names, of the routine and of types.
    "CREATE FUNCTION \"Lib\".\"Mixed\"(\"X\" \"MyType\", y public.t, \"z\"\"q\" text) RETURNS void LANGUAGE sql \
     AS $$ SELECT $$;",
    "create function LIB.Lower_Me(A INT) returns int language SQL as $$ select 1 $$;",
    // Modes, defaults, OUT arguments left out of the identity.
    "CREATE FUNCTION m(IN a int, OUT b text, INOUT c bigint, d smallint DEFAULT 3, e boolean = true) \
     LANGUAGE plpgsql AS $$ BEGIN b := 'x'; END $$;",
    "CREATE FUNCTION u(int, out int) LANGUAGE sql AS $$ SELECT $1 $$;",
    "CREATE FUNCTION w(a int, OUT x int, OUT y text) LANGUAGE sql AS $$ SELECT a, 'y' $$;",
    "CREATE FUNCTION dflt(a int DEFAULT (1 + 2) * 3, b text DEFAULT concat('a', 'b', 'c')) RETURNS int \
     LANGUAGE sql AS $$ SELECT a $$;",
    // The SQL types spelled with keywords, without modifiers; arrays.
    "CREATE FUNCTION s(a double precision, b character varying, c timestamp with time zone, \
     d timestamp without time zone, e time, f time with time zone, g numeric, h decimal, i real, j float, \
     k varchar, l char varying, m int[], n integer[3], o text[][], p timestamp, q dec, r boolean, \
     t time without time zone) RETURNS int LANGUAGE sql AS 'SELECT 1';",
    // Procedures.
    "CREATE PROCEDURE p(a int, INOUT b int) LANGUAGE plpgsql AS $$ BEGIN b := a; END $$;",
    "CREATE OR REPLACE PROCEDURE app.p2() LANGUAGE sql AS $$ SELECT 1 $$;",
    // Comments around and inside the header.
    "-- leading\nCREATE /* c */ FUNCTION f() /* d */ RETURNS int -- e\n LANGUAGE sql AS $$ SELECT 1 $$; -- trailing\n",
    // The language as a string, or quoted; the body single-quoted.
    "CREATE FUNCTION l() RETURNS int LANGUAGE 'sql' AS 'SELECT 1';",
    "CREATE FUNCTION l2() RETURNS int LANGUAGE \"plpgsql\" AS $body$ BEGIN RETURN 1; END $body$;",
    "CREATE FUNCTION q() RETURNS text LANGUAGE sql AS 'SELECT ''a''';",
    // Unreserved keywords as argument names and types.
    "CREATE FUNCTION k(name text, text name, double int, varying text) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    // The options the reader skips over.
    "CREATE FUNCTION rt(a int) RETURNS TABLE (language text, b int) LANGUAGE sql AS $$ SELECT 'x', 1 $$;",
    "CREATE FUNCTION sd(a int) RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp \
     COST 10 PARALLEL SAFE STRICT AS $$ SELECT a $$;",
    "CREATE FUNCTION so(a int) RETURNS SETOF int AS $$ SELECT a $$ LANGUAGE sql;",
    // Errors in bodies: the same message at the same file position.
    "CREATE FUNCTION bad(x int) RETURNS int LANGUAGE sql AS $$ SELEC x $$;",
    "CREATE FUNCTION\n  badp() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1\nEND $$;",
    "CREATE FUNCTION badq() RETURNS text LANGUAGE sql AS 'SELECT FROM FROM ''x''';",
    // Two routines of one name in one file (the project refuses it later).
    "CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n\
     CREATE FUNCTION twice(integer) RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;;\n",
];

/// Shapes left to the tree, read the same either way.
const LEFT_TO_THE_TREE: &[&str] = &[
    "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\nGRANT EXECUTE ON FUNCTION g() TO public;",
    "CREATE FUNCTION ba(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT a; END;",
    "CREATE FUNCTION r(a int) RETURNS int LANGUAGE sql RETURN a + 1;",
    "CREATE FUNCTION nm(a numeric(10,2), b varchar(20), c char, d bit, e interval, f char(3)) RETURNS int \
     LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION pt(a t.c%TYPE) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION sa(a SETOF int) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION cf(int) RETURNS int AS 'mylib', 'cf' LANGUAGE c;",
    "CREATE FUNCTION U&\"d\\0061t\"() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION js(a json, b jsonb) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION ar(a int ARRAY, b int ARRAY[2]) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION kw(left text) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION ts(a timestamp(3), b time(0) with time zone) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION a_name_that_is_much_longer_than_the_sixty_three_bytes_postgresql_keeps() \
     RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "CREATE FUNCTION e() RETURNS text LANGUAGE sql AS E'SELECT \\'x\\'';",
    "CREATE FUNCTION (;",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$; DROP TABLE x",
    "-- nothing but a comment\n",
    "",
];

fn tokens(text: &str) -> Vec<ScanToken> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    pg_query::scan_tokens(text).unwrap_or_default()
}

/// Both readings of `text`, as the operator would see them.
fn both(text: &str) -> (String, String) {
    let read = |reader| format!("{:#?}", parse_file("procedures/x.sql", text, "lib", reader));
    (read(Reader::Tree), read(Reader::TokensWhereExact))
}

#[test]
fn the_token_reader_takes_the_common_shapes_and_reads_them_as_the_tree_does() {
    for text in TAKEN {
        assert!(
            statements_from_tokens(text, &tokens(text)).is_some(),
            "the token reader did not take:\n{text}"
        );
        let (tree, from_tokens) = both(text);
        assert_eq!(tree, from_tokens, "the two readings differ for:\n{text}");
    }
}

#[test]
fn what_the_token_reader_does_not_know_exactly_is_read_from_the_tree() {
    for text in LEFT_TO_THE_TREE {
        let (tree, from_tokens) = both(text);
        assert_eq!(tree, from_tokens, "the two readings differ for:\n{text}");
    }
    // The reader itself declines the shapes it does not read (a file the
    // raw parser refuses is declined by the split after it).
    for text in &LEFT_TO_THE_TREE[..13] {
        assert!(
            read_creates(text, &tokens(text)).is_none(),
            "the token reader took:\n{text}"
        );
    }
}

#[test]
fn the_example_projects_read_the_same_both_ways() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut files = 0;
    for project in std::fs::read_dir(&examples).expect("examples") {
        let procedures = project.expect("entry").path().join("procedures");
        let Ok(entries) = std::fs::read_dir(&procedures) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "sql") {
                let text = std::fs::read_to_string(&path).expect("readable");
                let (tree, from_tokens) = both(&text);
                assert_eq!(tree, from_tokens, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(files >= 5, "only {files} example files found");
}
