use anyhow::Result;
use pgrollout_tests::{Stack, StackOptions};

fn probe(marker: &str) -> String {
    format!("CREATE OR REPLACE FUNCTION public.probe(p integer)\nRETURNS integer\nLANGUAGE plpgsql AS $$\nBEGIN\n  -- {marker}\n  RETURN p;\nEND\n$$;\n")
}

#[tokio::test]
async fn show() -> Result<()> {
    let stack = Stack::start_with(StackOptions { deployment_extra: "rollback_timeout = \"2s\"".into(), agent_timeouts: "lock = \"20s\"".into(), ..StackOptions::default() }).await?;
    let client = stack.zone("dev").pg.connect().await?;
    for v in ["v1", "v2", "v3"] {
        stack.write_procedure("probe.sql", &probe(v))?;
        stack.cli(&["deploy", "probe", "dev"]).await?;
    }
    let path: String = client.query_one("SELECT backup_path FROM pgrollout.ledger ORDER BY id DESC LIMIT 1", &[]).await?.get(0);
    let text = std::fs::read_to_string(&path)?;
    std::fs::write(&path, text.replacen("-- v2", "-- v#", 1))?;
    println!("{}", stack.cli(&["rollback", "probe", "dev"]).await?);
    println!("{}", stack.cli(&["history", "probe", "dev"]).await?);
    println!("{}", stack.cli(&["disable", "probe", "dev", "--revoke"]).await?);
    println!("{}", stack.cli(&["enable", "probe", "dev"]).await?);
    println!("{}", stack.cli(&["rollback", "probe", "dev", "--emergency", "--reason", "test"]).await?);
    println!("{}", stack.cli(&["rollback", "probe", "dev", "--emergency"]).await?);
    let holder = stack.zone("dev").pg.connect().await?;
    holder.execute("SELECT pg_advisory_lock($1)", &[&0x7067_726f_6c6c_6f75_i64]).await?;
    println!("{}", stack.cli(&["rollback", "probe", "dev"]).await?);
    println!("{}", stack.cli(&["history", "probe", "dev", "--output", "json"]).await?);
    Ok(())
}
