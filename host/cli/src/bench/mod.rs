//! Benchmarks: every figure is reported beside a yardstick measured in the
//! same run on the same machine, as a ratio, because these machines are
//! shared and noisy.
//!
//! - [`network`]: against a running node (`stead bench http|grpc|hot`).
//! - [`inprocess`]: a node inside the bench process (`stead bench
//!   engine|memory|recovery --component FILE`).
//! - [`messaging`]: sends, answers and timers in process (`stead bench
//!   messaging --account FILE --transfer FILE`).
//!
//! Figures are read by people (`BENCHMARKS.md`); nothing here asserts a
//! timing.

pub mod failover;
pub mod inprocess;
pub mod messaging;
pub mod network;
pub mod subscribe;
pub mod takeover;

use std::time::Duration;

use serde::Serialize;

/// One measured figure, with its yardstick and target.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub yardstick: Option<Yardstick>,
    /// The target, in words, e.g. `>= 0.5 of the yardstick`.
    pub target: Option<String>,
    pub target_met: Option<bool>,
}

/// What a figure is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct Yardstick {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// `figure / yardstick`.
    pub ratio: f64,
}

impl Figure {
    pub fn new(scenario: &str, name: &str, value: f64, unit: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            yardstick: None,
            target: None,
            target_met: None,
        }
    }

    pub fn against(mut self, name: &str, value: f64, unit: &str) -> Self {
        let ratio = if value == 0.0 {
            f64::NAN
        } else {
            self.value / value
        };
        self.yardstick = Some(Yardstick {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            ratio,
        });
        self
    }

    pub fn target(mut self, text: &str, met: bool) -> Self {
        self.target = Some(text.to_owned());
        self.target_met = Some(met);
        self
    }

    /// `name  value unit  [vs yardstick = ratio]  [target: ok/MISSED]`.
    pub fn line(&self) -> String {
        let mut out = format!(
            "{:<9} {:<34} {:>12} {:<6}",
            self.scenario,
            self.name,
            fmt_value(self.value),
            self.unit
        );
        if let Some(y) = &self.yardstick {
            out.push_str(&format!(
                "  vs {} {} {} = {:.2}x",
                y.name,
                fmt_value(y.value),
                y.unit,
                y.ratio
            ));
        }
        if let (Some(t), Some(met)) = (&self.target, self.target_met) {
            out.push_str(&format!(
                "  [target {t}: {}]",
                if met { "met" } else { "MISSED" }
            ));
        }
        out
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Latency percentiles of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub count: usize,
}

impl Latencies {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
            count: samples.len(),
        }
    }
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resident set size of this process in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Starts `stead up` on free loopback ports with `args`, waits for its ready
/// line and returns the child and its gRPC address (`http://...`).
pub fn start_node(
    stead: &std::path::Path,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<(std::process::Child, String)> {
    use anyhow::Context;
    use std::io::BufRead;
    let mut child = std::process::Command::new(stead)
        .args(["up", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(args)
        .env("STEAD_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", stead.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?)
        .read_line(&mut line)
        .context("reading the ready line")?;
    match line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .map(|a| format!("http://{a}"))
    {
        Some(grpc) => Ok((child, grpc)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the node did not start: {line:?}")
        }
    }
}

/// Progress for a person watching, on stderr.
pub fn progress(text: &str) {
    eprintln!("  .. {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let l = Latencies::of((1..=1000).map(Duration::from_micros).collect());
        assert_eq!(l.p50, Duration::from_micros(501));
        assert_eq!(l.p99, Duration::from_micros(991));
        assert_eq!(l.count, 1000);
        assert_eq!(Latencies::of(vec![]).count, 0);
    }

    #[test]
    fn a_figure_carries_its_ratio_and_target() {
        let f = Figure::new("http", "rps", 50.0, "req/s")
            .against("noop", 100.0, "req/s")
            .target(">= 0.5x", true);
        assert_eq!(f.yardstick.as_ref().map(|y| y.ratio), Some(0.5));
        assert!(
            f.line().contains("0.50x") && f.line().contains("met"),
            "{}",
            f.line()
        );
    }
}
