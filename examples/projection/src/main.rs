//! `projection ADDR POSTGRES_URL`: keeps balances per owner in PostgreSQL
//! from the node's `account` events, until stopped; run it again and it
//! resumes where it stopped.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(url)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: projection http://127.0.0.1:7400 postgres://user@host/db");
    };
    let report = projection::run(&addr, &url, None).await?;
    println!("applied {} events", report.applied);
    Ok(())
}
