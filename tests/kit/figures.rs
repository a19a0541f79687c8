//! What the benches print beside their figures: a process's CPU time,
//! scheduling and peak RSS, the broker's process, and a figure against
//! its goal.

use std::collections::HashMap;

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

/// User + system CPU seconds of process `pid` (`self` for this one).
pub fn cpu_seconds(pid: impl std::fmt::Display) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
}

/// The process of this machine that listens on the port of AMQP URL
/// `url` (the broker's Erlang VM), if any: several brokers may run here
/// at once (RabbitMQ 3.x and 4.3, a cluster's nodes).
pub fn broker_pid(url: &str) -> Option<u32> {
    let authority = url
        .rsplit_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let port: u16 = host_port
        .rsplit_once(':')
        .map_or(Some(5672), |(_, port)| port.parse().ok())?;
    // The listening socket's inode, from /proc/net/tcp (addresses in hex;
    // state 0A is LISTEN), then the process holding it open.
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        (u16::from_str_radix(local_port, 16).ok()? == port && fields.get(3)? == &"0A")
            .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))?
    })?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|process| {
            let pid: u32 = process.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(process.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|link| link.as_os_str() == inode.as_str())
                })
                .then_some(pid)
        })
}

/// How often a process's threads left the CPU so far, thread by thread,
/// as `perf stat -e context-switches,cpu-migrations` counts them, read
/// from `/proc/PID/task/*/{status,sched}`.
#[derive(Clone, Debug, Default)]
pub struct Switches(HashMap<String, ThreadSwitches>);

/// One thread's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreadSwitches {
    /// Voluntary context switches: the thread waited for something, and
    /// each such wait ended in a wakeup.
    pub wakeups: u64,
    /// Involuntary ones: the scheduler took the CPU from the thread.
    pub preemptions: u64,
    /// Moves to another CPU.
    pub migrations: u64,
}

impl Switches {
    /// The counts of `pid`'s threads now; empty once it is gone.
    pub fn of(pid: impl std::fmt::Display) -> Switches {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Switches::default();
        };
        let threads = tasks
            .flatten()
            .filter_map(|task| {
                let status = std::fs::read_to_string(task.path().join("status")).ok()?;
                let sched = std::fs::read_to_string(task.path().join("sched")).ok()?;
                let field = |text: &str, name: &str| -> Option<u64> {
                    text.lines()
                        .find_map(|line| line.strip_prefix(name))?
                        .trim_start_matches([' ', '\t', ':'])
                        .trim()
                        .parse()
                        .ok()
                };
                let counts = ThreadSwitches {
                    wakeups: field(&status, "voluntary_ctxt_switches")?,
                    preemptions: field(&status, "nonvoluntary_ctxt_switches")?,
                    migrations: field(&sched, "se.nr_migrations").unwrap_or(0),
                };
                Some((task.file_name().to_string_lossy().into_owned(), counts))
            })
            .collect();
        Switches(threads)
    }

    /// What the threads alive now did since `earlier`: a thread started
    /// since counts from zero, one that ended since is lost (a node's
    /// threads live as long as it does).
    pub fn since(&self, earlier: &Switches) -> ThreadSwitches {
        self.0
            .iter()
            .fold(ThreadSwitches::default(), |total, (thread, now)| {
                let before = earlier.0.get(thread).copied().unwrap_or_default();
                ThreadSwitches {
                    wakeups: total.wakeups + now.wakeups.saturating_sub(before.wakeups),
                    preemptions: total.preemptions
                        + now.preemptions.saturating_sub(before.preemptions),
                    migrations: total.migrations + now.migrations.saturating_sub(before.migrations),
                }
            })
    }
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
