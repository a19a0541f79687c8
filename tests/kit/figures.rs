//! What the benches print beside their figures: a process's peak RSS, and
//! a figure against its goal.

/// The peak RSS of process `pid` so far, in MiB (`VmHWM`); `None` once it
/// is gone.
pub fn peak_rss_mib(pid: impl std::fmt::Display) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib / 1024.0)
}

/// The page faults this process has taken so far that needed no disk
/// (`minflt` in `/proc/self/stat`): what an instance pays for each page
/// of memory the pool did not keep for it.
pub fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux has /proc/self/stat");
    // The command name, in parentheses, may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').expect("stat has the command name") + 2..];
    after_name
        .split(' ')
        .nth(7)
        .and_then(|field| field.parse().ok())
        .expect("minflt is the tenth field")
}

/// Prints `what`, its `value`, the goal (`value relation target`, with
/// `>=` or `<=`) and whether it is met.
pub fn print_goal(what: &str, value: f64, relation: &str, target: f64) {
    let met = match relation {
        ">=" => value >= target,
        _ => value <= target,
    };
    println!(
        "  {what:<52} {value:>8.2}  (goal {relation} {target}) {}",
        if met { "met" } else { "NOT MET" }
    );
}
