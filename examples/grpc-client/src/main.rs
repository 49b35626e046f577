//! usage: grpc-client [ADDR] [ACCOUNT_ID]   (default http://127.0.0.1:7400, grpc-demo)

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .or_else(|| std::env::var("STEAD_ADDR").ok())
        .unwrap_or_else(|| "http://127.0.0.1:7400".into());
    let id = args.next().unwrap_or_else(|| "grpc-demo".into());
    let summary = grpc_client::run(&addr, &id).await?;
    println!("balance: {}", summary.balance);
    println!("retry was a duplicate: {}", summary.retry_was_duplicate);
    println!("overdraft refused: {}", summary.overdraft_error);
    for event in summary.events {
        println!("event: {event}");
    }
    Ok(())
}
