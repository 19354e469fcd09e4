#[test]
fn explore_plpgsql() {
    let cases = [
        "CREATE FUNCTION f(m public.material) RETURNS text LANGUAGE plpgsql AS $$ BEGIN m.uid := 'x'; RETURN m.uid; END $$",
        "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$ DECLARE r public.material; BEGIN r.uid := 'x'; RETURN r.uid; END $$",
        "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$ DECLARE r record; BEGIN SELECT 'a' AS uid INTO r; r.uid := 'b'; RETURN r.uid; END $$",
        "CREATE FUNCTION f(VARIADIC xs public.mydomain[]) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $$ <<blk>> DECLARE a2 int := a; BEGIN blk.a2 := 2; RETURN f.a; END $$",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $$ DECLARE x int[]; BEGIN x[1] := a; RETURN x[1]; END $$",
        "CREATE FUNCTION f(a jsonb) RETURNS int LANGUAGE plpgsql AS $$ DECLARE x jsonb; BEGIN x['k'] := a; RETURN 1; END $$",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $$ DECLARE x CONSTANT int NOT NULL := 1; y int COLLATE \"C\"; BEGIN RETURN x; END $$",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $$ DECLARE y text COLLATE \"C\"; BEGIN RETURN a; END $$",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN IF a IS NULL THEN RAISE EXCEPTION USING ERRCODE = 'no_data_found', MESSAGE = 'x'; END IF; RETURN a; END $$",
        "CREATE FUNCTION f(a int) RETURNS SETOF int LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM t WHERE n < a) SELECT n FROM t; END $$",
    ];
    for case in cases {
        println!("{:<60} => {:?}", &case[16..case.len().min(76)], pg_query::parse_plpgsql(case).map(|_| ()));
    }
}
