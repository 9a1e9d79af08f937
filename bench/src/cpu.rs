//! The CPU time a local server uses (Linux `/proc`), so that servers can be compared by
//! CPU per request where requests/s cannot tell them apart (one-shot connections on
//! loopback are capped by the client's TIME_WAIT ports, near 14 k/s on the project's
//! machine, whichever server answers).
//!
//! ```
//! # #[cfg(target_os = "linux")] {
//! use sockmsg_bench::cpu::process_cpu_time;
//! let before = process_cpu_time(std::process::id())?;
//! let mut x = 0u64;
//! for i in 0..2_000_000u64 { x = std::hint::black_box(x.wrapping_add(i)); }
//! assert!(process_cpu_time(std::process::id())? >= before);
//! assert!(process_cpu_time(u32::MAX).is_err());
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// User + system CPU time process `pid` has used so far, all its threads together
/// (fields `utime` and `stime` of `/proc/PID/stat`, in clock ticks: usually 10 ms each).
pub fn process_cpu_time(pid: u32) -> io::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {path}: {e}")))?;
    let ticks = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: no utime and stime fields"),
        )
    })?;
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_second()))
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself: fields are counted after its
/// last `)`, where field 3 (the state) comes first, so utime (14) and stime (15) are the
/// 12th and 13th.
fn parse_stat(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, the value of every common Linux ABI,
/// if that cannot be asked).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (my (odd) server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(325));
        assert_eq!(parse_stat("1234 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }
}
