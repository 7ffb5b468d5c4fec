//! This process as Prometheus' usual `process_*` metrics see it, read from
//! `/proc/self` at scrape time: resident and virtual memory, CPU seconds,
//! open and allowed file descriptors, threads and the start time.

/// One reading; a value that could not be read is `None` and left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Reads `/proc/self` now (Linux).
pub fn read() -> ProcessStats {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map(|t| t as f64);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok());
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
    // Fields after the command name (field 2), counted from 3 (state).
    let field = |n: usize| fields.get(n.wrapping_sub(3)).and_then(|v| v.parse::<u64>().ok());
    ProcessStats {
        resident_memory_bytes: field(24).zip(page).map(|(pages, page)| pages * page),
        virtual_memory_bytes: field(23),
        cpu_seconds: field(14)
            .zip(field(15))
            .zip(ticks)
            .map(|((user, system), ticks)| (user + system) as f64 / ticks),
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l)),
        threads: field(20),
        start_time_seconds: field(22)
            .zip(ticks)
            .zip(boot)
            .map(|((start, ticks), boot)| boot + start as f64 / ticks),
    }
}

/// The fields of `/proc/self/stat` after the command name (which may hold
/// spaces and parentheses: it ends at the last ')').
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads() {
        let p = read();
        assert!(p.resident_memory_bytes.unwrap() > 1 << 20, "{p:?}");
        assert!(p.virtual_memory_bytes.unwrap() >= p.resident_memory_bytes.unwrap());
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        assert!(p.threads.unwrap() >= 1);
        assert!(p.start_time_seconds.unwrap() > 1.6e9, "{p:?}");
    }

    #[test]
    fn odd_command_names_and_limits() {
        let f = stat_fields("42 (a) b (c)) S 1 2 3");
        assert_eq!(f, ["S", "1", "2", "3"]);
        assert_eq!(stat_fields("garbage"), Vec::<&str>::new());
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(max_open_files("nothing"), None);
    }
}
