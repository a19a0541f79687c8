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
