#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stripe_sync::cli::run().await
}
