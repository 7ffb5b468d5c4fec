//! The figures a benchmark prints: nearest-rank percentiles of its samples,
//! the summary lines, and samples of a process's memory and CPU from /proc.

/// Percentile of sorted samples, nearest-rank.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    nearest_rank(sorted, p).unwrap_or(f64::NAN)
}

/// The nearest-rank percentile `p` (0 to 100) of sorted samples.
pub(super) fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub(super) fn report(label: &str, unit: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} min={:.1}{unit} p50={:.1}{unit} p90={:.1}{unit} p95={:.1}{unit} p99={:.1}{unit} max={:.1}{unit}",
        samples.len(),
        samples.first().copied().unwrap_or(f64::NAN),
        percentile(samples, 50.0),
        percentile(samples, 90.0),
        percentile(samples, 95.0),
        percentile(samples, 99.0),
        samples.last().copied().unwrap_or(f64::NAN),
    );
}

/// p50/p90/p99/max of sorted microsecond samples, in milliseconds.
pub(super) fn latency_line(sorted: &[u32]) -> String {
    let ms = |p: f64| nearest_rank(sorted, p).map_or(f64::NAN, |us| f64::from(us) / 1000.0);
    format!(
        "n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        sorted.len(),
        ms(50.0),
        ms(90.0),
        ms(99.0),
        ms(100.0)
    )
}

/// (resident KiB, CPU ticks) of a process, from /proc.
pub(super) fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((rss, utime + stime))
}

/// Clock ticks per second, the unit of [`proc_sample`]'s CPU time.
pub(super) fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64
}

#[cfg(test)]
mod tests {
    use super::{latency_line, nearest_rank, percentile};

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn latency_percentiles_of_microseconds() {
        let s: Vec<u32> = (1..=1000).map(|i| i * 10).collect();
        assert_eq!(nearest_rank(&s, 99.0), Some(9900));
        assert_eq!(nearest_rank(&s, 100.0), Some(10_000));
        assert_eq!(nearest_rank::<u32>(&[], 50.0), None);
        assert_eq!(
            latency_line(&s),
            "n=1000 p50=5.00 ms p90=9.00 ms p99=9.90 ms max=10.00 ms"
        );
    }
}
