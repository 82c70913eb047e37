//! A process's peak memory and CPU time, from Linux's `/proc`.

use anyhow::{Context, Result, anyhow};

fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1_000.0 / rustix::param::clock_ticks_per_second() as f64
}

fn stat_cpu_ms(stat: &str) -> Result<f64> {
    // Fields after the command name (which may hold spaces) start with the state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: u64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok(ticks_to_ms(utime + stime))
}

/// User plus system CPU time of process `pid`, in milliseconds.
pub fn cpu_ms(pid: u32) -> Result<f64> {
    stat_cpu_ms(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// User plus system CPU time of this process, in milliseconds.
pub fn self_cpu_ms() -> Result<f64> {
    stat_cpu_ms(&std::fs::read_to_string("/proc/self/stat")?)
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .ok_or_else(|| anyhow!("no {field} for {pid}"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad {field} line"))?
        .parse()?;
    Ok(kb / 1024.0)
}

/// `VmHWM` of process `pid` in MiB: its peak resident memory since start or the last reset.
pub fn peak_rss_mb(pid: u32) -> Result<f64> {
    status_mb(pid, "VmHWM")
}

/// `VmRSS` of process `pid` in MiB: its resident memory now.
pub fn rss_mb(pid: u32) -> Result<f64> {
    status_mb(pid, "VmRSS")
}

/// The 1-, 5- and 15-minute load averages of the machine.
pub fn load_average() -> Result<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    let mut fields = text.split_whitespace();
    let mut next = || -> Result<f64> {
        Ok(fields
            .next()
            .ok_or_else(|| anyhow!("short /proc/loadavg"))?
            .parse()?)
    };
    Ok([next()?, next()?, next()?])
}

/// Resets `VmHWM` of process `pid` to its current RSS.
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() -> Result<()> {
        assert!(self_cpu_ms()? >= 0.0);
        assert!(peak_rss_mb(std::process::id())? > 0.0);
        assert!(rss_mb(std::process::id())? > 0.0);
        assert!(load_average()?.iter().all(|l| *l >= 0.0));
        let stat = "1 (a b) S 0 0 0 0 0 0 0 0 0 0 250 150 0 0";
        assert_eq!(stat_cpu_ms(stat)?, ticks_to_ms(400));
        Ok(())
    }
}
