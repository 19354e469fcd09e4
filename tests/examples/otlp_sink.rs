//! A stand-in OpenTelemetry collector for benchmarks: receives OTLP/gRPC
//! spans on a free loopback port, prints `endpoint <url>` first, and on
//! SIGTERM how many spans it received.
//!
//! `cargo run -p pgrollout-tests --example otlp_sink`

use pgrollout_tests::otlp_receiver::OtlpReceiver;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut receiver = OtlpReceiver::start().await?;
    println!("endpoint {}", receiver.endpoint);
    terminate.recv().await;
    println!("spans {}", receiver.received_now().len());
    Ok(())
}
