//! `bench idle`: resident memory and CPU of idle agents.

use std::time::{Duration, Instant};

use super::stats::{proc_sample, ticks_per_second};
use crate::Outcome;
use crate::cluster::DemoCluster;

pub(super) async fn idle(cluster: &DemoCluster, duration: Duration) -> Outcome {
    let ticks_per_s = ticks_per_second();
    println!(
        "idle: sampling the three agents for {}",
        humantime::format_duration(duration)
    );
    let pids: Vec<(String, u32)> = cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.pid()?)))
        .collect();
    let before: Vec<Option<(u64, u64)>> = pids.iter().map(|(_, p)| proc_sample(*p)).collect();
    let start = Instant::now();
    let mut rss_peak = vec![0u64; pids.len()];
    while start.elapsed() < duration {
        for (i, (_, p)) in pids.iter().enumerate() {
            if let Some((rss, _)) = proc_sample(*p) {
                rss_peak[i] = rss_peak[i].max(rss);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for (i, (name, pid)) in pids.iter().enumerate() {
        let (Some((_, t0)), Some((rss, t1))) = (before[i], proc_sample(*pid)) else {
            println!("  {name}: process gone");
            continue;
        };
        let cpu = (t1.saturating_sub(t0)) as f64 / ticks_per_s / elapsed * 100.0;
        println!(
            "  {name:<8} rss {:.1} MB (peak {:.1} MB)  cpu {cpu:.2}% of a core",
            rss as f64 / 1024.0,
            rss_peak[i] as f64 / 1024.0
        );
    }
    Ok(())
}
