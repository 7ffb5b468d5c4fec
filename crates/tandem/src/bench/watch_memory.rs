//! `bench watch-memory`: resident memory of a node holding many
//! WatchStatus streams.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::coordinator;
use super::stats::{proc_sample, ticks_per_second};
use crate::client::connect_to;
use crate::cluster::DemoCluster;
use crate::{Failure, Outcome};

/// Raises this process's soft limit of open files to at least `wanted`
/// (capped by the hard limit); agents started afterwards inherit it.
pub(super) fn raise_nofile(wanted: u64) -> Outcome {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| Failure::runtime(format!("cannot read the open-files limit: {e}")))?;
    if soft >= wanted {
        return Ok(());
    }
    let new = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard)
        .map_err(|e| Failure::runtime(format!("cannot raise the open-files limit from {soft} to {new}: {e}")))?;
    println!("(open-files limit raised from {soft} to {new})");
    Ok(())
}

/// Opens `streams` WatchStatus streams to one node over `connections`
/// HTTP/2 connections, keeps reading them, and reports the node's
/// resident memory before, once all are open, and after `steady`.
pub(super) async fn watch_memory(
    cluster: &DemoCluster,
    streams: usize,
    connections: usize,
    steady: Duration,
    node: Option<String>,
    timeout: Duration,
) -> Outcome {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let target = match node {
        Some(n) => n,
        None => coordinator(cluster, timeout).await?.0,
    };
    let local = cluster
        .node(&target)
        .ok_or_else(|| Failure::input(format!("no local node {target:?}")))?;
    let pid = local
        .pid()
        .ok_or_else(|| Failure::runtime(format!("{target} is not running")))?;
    let rss = |what: &str| -> Result<u64, Failure> {
        proc_sample(pid)
            .map(|(kib, _)| kib)
            .ok_or_else(|| Failure::runtime(format!("{target} ({pid}) is gone {what}")))
    };
    println!(
        "watch memory: {streams} WatchStatus streams to {target} over {connections} HTTP/2 connections \
         ({} per connection; the server sets no limit of concurrent streams per connection)",
        streams.div_ceil(connections)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss("before opening")?;
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(connect_to(&local.address, timeout, &Default::default()).await?);
    }
    let opened = Arc::new(AtomicUsize::new(0));
    let failed_to_open = Arc::new(AtomicUsize::new(0));
    let with_message = Arc::new(AtomicUsize::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let note = |errors: &Mutex<BTreeMap<String, usize>>, e: String| {
        if let Ok(mut m) = errors.lock() {
            *m.entry(e).or_default() += 1;
        }
    };
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut client = clients[i % connections].clone();
        let (opened, failed_to_open, with_message, messages, errors) = (
            opened.clone(),
            failed_to_open.clone(),
            with_message.clone(),
            messages.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut stream = match client.watch_status(pb::WatchStatusRequest { max_interval_ms: 0 }).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    failed_to_open.fetch_add(1, Ordering::Relaxed);
                    note(&errors, format!("open: {:?}: {}", e.code(), e.message()));
                    return;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            let mut first = true;
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {
                        if first {
                            with_message.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {
                        note(&errors, "stream ended by the server".into());
                        return;
                    }
                    Err(e) => {
                        note(&errors, format!("read: {:?}: {}", e.code(), e.message()));
                        return;
                    }
                }
            }
        }));
    }
    while opened.load(Ordering::Relaxed) + failed_to_open.load(Ordering::Relaxed) < streams
        || with_message.load(Ordering::Relaxed) < opened.load(Ordering::Relaxed)
    {
        if start.elapsed() > timeout {
            println!(
                "  (gave up waiting for every stream after {})",
                humantime::format_duration(timeout)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_time = start.elapsed();
    let all_open = rss("once the streams were open")?;
    let (_, ticks0) = proc_sample(pid).unwrap_or_default();
    let messages0 = messages.load(Ordering::Relaxed);
    let steady_start = Instant::now();
    let mut peak = all_open;
    while steady_start.elapsed() < steady {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss("at steady state")?);
    }
    let (at_steady, ticks1) = proc_sample(pid).unwrap_or_default();
    let steady_s = steady_start.elapsed().as_secs_f64();
    let received = messages.load(Ordering::Relaxed) - messages0;
    for t in &tasks {
        t.abort();
    }
    drop(clients);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = rss("after closing")?;
    let ticks_per_s = ticks_per_second();
    let n = opened.load(Ordering::Relaxed);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "  opened {n} of {streams} in {:.1} s ({} failed to open; {} got a first status)",
        open_time.as_secs_f64(),
        failed_to_open.load(Ordering::Relaxed),
        with_message.load(Ordering::Relaxed)
    );
    println!(
        "  {target} resident: before {:.1} MiB, all open {:.1} MiB, steady ({}) {:.1} MiB (peak {:.1} MiB), 2 s after closing {:.1} MiB",
        mib(before),
        mib(all_open),
        humantime::format_duration(steady),
        mib(at_steady),
        mib(peak),
        mib(closed)
    );
    if n > 0 {
        println!(
            "  per stream at steady state: {:.1} KiB",
            at_steady.saturating_sub(before) as f64 / n as f64
        );
    }
    println!(
        "  at steady state: {:.0} statuses/s received over all streams; {target} used {:.1}% of a core",
        received as f64 / steady_s,
        ticks1.saturating_sub(ticks0) as f64 / ticks_per_s / steady_s * 100.0
    );
    if let Ok(m) = errors.lock() {
        for (e, count) in m.iter() {
            println!("  error x{count}: {e}");
        }
    }
    Ok(())
}
