//! `uring-comet plot`: the memory log (`date\tepoch\trss_kib\tconns`, see
//! `loadtest/README.md`) as a chart of server RSS (MiB, left axis) and connections (right
//! axis) against minutes elapsed, in SVG or PNG by the output's extension, drawn with plotters.
//! Also the log's growth after warm-up ([`growth`]), the soak's acceptance figure.
//!
//! Text is laid out with ab_glyph and an embedded DejaVu Sans, so charts need no system fonts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Flags of `uring-comet plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Memory log to draw (lines `date<TAB>epoch<TAB>rss_kib<TAB>conns`).
    pub log: PathBuf,
    /// Chart file(s) to write, `.svg` or `.png`; repeatable [default: the log's name with .svg].
    #[arg(short = 'o', long = "output")]
    pub output: Vec<PathBuf>,
    /// Chart title [default: "server memory: the log file name"].
    #[arg(long)]
    pub title: Option<String>,
    /// Warm-up before growth is measured, from when connections first reach their peak
    /// (e.g. `60s`, `1m`).
    #[arg(long, default_value = "1m", value_parser = crate::tools::duration::parse_duration)]
    pub warmup: Duration,
}

/// One line of the memory log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemSample {
    /// Unix time, seconds.
    pub epoch: u64,
    /// Server VmRSS, KiB.
    pub rss_kib: u64,
    /// Established subscriber connections.
    pub conns: u64,
}

/// Parses a memory log; blank lines and lines starting with `#` are skipped.
pub fn parse_mem_log(text: &str) -> Result<Vec<MemSample>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| -> Result<u64> {
            f.get(i)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| anyhow!("line {}: field {} is not a number: {line:?}", n + 1, i + 1))
        };
        if f.len() != 4 {
            bail!("line {}: expected 4 tab-separated fields: {line:?}", n + 1);
        }
        out.push(MemSample {
            epoch: num(1)?,
            rss_kib: num(2)?,
            conns: num(3)?,
        });
    }
    Ok(out)
}

/// RSS growth over a run once warmed up: from the first sample `warmup` after connections
/// first reach their peak, to the last sample still at that peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Growth {
    /// The peak connection count.
    pub conns: u64,
    /// Minutes from the first sample to the baseline sample.
    pub from_min: f64,
    /// Minutes from the first sample to the last sample at peak connections.
    pub to_min: f64,
    /// RSS at the baseline sample, KiB.
    pub base_kib: u64,
    /// RSS at the last sample at peak connections, KiB.
    pub end_kib: u64,
    /// Highest RSS from the baseline on, KiB.
    pub peak_kib: u64,
    /// (end - base) / base, percent.
    pub growth_pct: f64,
    /// (peak - base) / base, percent.
    pub peak_pct: f64,
}

/// Growth after warm-up; `None` if the log does not reach past the warm-up at peak load.
pub fn growth(samples: &[MemSample], warmup: Duration) -> Option<Growth> {
    let first = samples.first()?;
    let conns = samples.iter().map(|s| s.conns).max()?;
    let loaded = samples.iter().position(|s| s.conns == conns)?;
    let base_epoch = samples[loaded].epoch + warmup.as_secs();
    let b = loaded
        + samples[loaded..]
            .iter()
            .position(|s| s.epoch >= base_epoch)?;
    let e = samples.iter().rposition(|s| s.conns == conns)?;
    if e <= b {
        return None;
    }
    let (base, end) = (samples[b], samples[e]);
    let peak = samples[b..=e].iter().map(|s| s.rss_kib).max()?;
    let pct = |v: u64| 100.0 * (v as f64 - base.rss_kib as f64) / base.rss_kib.max(1) as f64;
    let min = |s: &MemSample| (s.epoch - first.epoch) as f64 / 60.0;
    Some(Growth {
        conns,
        from_min: min(&base),
        to_min: min(&end),
        base_kib: base.rss_kib,
        end_kib: end.rss_kib,
        peak_kib: peak,
        growth_pct: pct(end.rss_kib),
        peak_pct: pct(peak),
    })
}

impl Growth {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "RSS at {} connections: {:.2} MiB at {:.1} min (after warm-up), {:.2} MiB at {:.1} min: {:+.2}% (peak {:+.2}%)",
            self.conns,
            self.base_kib as f64 / 1024.0,
            self.from_min,
            self.end_kib as f64 / 1024.0,
            self.to_min,
            self.growth_pct,
            self.peak_pct
        )
    }
}

/// Runs `uring-comet plot`: reads the log, writes each chart, prints the growth line.
pub fn run(a: PlotArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.log)
        .with_context(|| format!("reading mem log {}", a.log.display()))?;
    let samples = parse_mem_log(&text)?;
    let outputs = if a.output.is_empty() {
        vec![a.log.with_extension("svg")]
    } else {
        a.output
    };
    let title = a.title.unwrap_or_else(|| default_title(&a.log));
    for out in &outputs {
        draw(&samples, out, &title)?;
        println!("chart: {}", out.display());
    }
    match growth(&samples, a.warmup) {
        Some(g) => println!("{}", g.line()),
        None => println!("growth: the log does not reach past the warm-up at peak connections"),
    }
    Ok(())
}

/// `server memory: <log file name>`.
pub fn default_title(log: &Path) -> String {
    let name = log.file_name().map(|n| n.to_string_lossy().into_owned());
    format!("server memory: {}", name.unwrap_or_default())
}

/// Chart size, pixels.
const SIZE: (u32, u32) = (960, 540);

/// Draws `samples` to `out`, SVG or PNG by its extension.
pub fn draw(samples: &[MemSample], out: &Path, title: &str) -> Result<()> {
    if samples.is_empty() {
        bail!("the mem log has no lines to draw");
    }
    register_font();
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "svg" => draw_on(
            SVGBackend::new(out, SIZE).into_drawing_area(),
            samples,
            title,
        ),
        "png" => draw_on(
            BitMapBackend::new(out, SIZE).into_drawing_area(),
            samples,
            title,
        ),
        _ => bail!("chart {}: the name must end in .svg or .png", out.display()),
    }
    .with_context(|| format!("drawing {}", out.display()))
}

/// Makes "sans-serif" DejaVu Sans for every chart (once per process).
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TTF; a failure would leave text undrawable and is
        // reported by the drawing calls.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn draw_on<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    samples: &[MemSample],
    title: &str,
) -> Result<()> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let t0 = samples[0].epoch;
    let min = |s: &MemSample| (s.epoch.saturating_sub(t0)) as f64 / 60.0;
    let x_max = samples.iter().map(min).fold(0.0, f64::max).max(1.0 / 60.0);
    let rss_max = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let conns_max = samples.iter().map(|s| s.conns).max().unwrap_or(0) as f64;
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..(rss_max * 1.15).max(1.0))
        .map_err(e)?
        .set_secondary_coord(0.0..x_max, 0.0..(conns_max * 1.15).max(1.0));
    chart
        .configure_mesh()
        .x_desc("minutes elapsed")
        .y_desc("server RSS (MiB)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    chart
        .configure_secondary_axes()
        .y_desc("connections")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    let rss = samples.iter().map(|s| (min(s), s.rss_kib as f64 / 1024.0));
    chart
        .draw_series(LineSeries::new(rss, BLUE.stroke_width(2)))
        .map_err(e)?
        .label("RSS (MiB, left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let conns = samples.iter().map(|s| (min(s), s.conns as f64));
    chart
        .draw_secondary_series(LineSeries::new(conns, RED.stroke_width(2)))
        .map_err(e)?
        .label("connections (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{draw, growth, parse_mem_log, MemSample};

    const LOG: &str = "Sun Nov 29 16:24:26 UTC 2026\t1000\t8000\t0\n\
        Sun Nov 29 16:24:27 UTC 2026\t1030\t9000\t100\n\
        # comment\n\
        \n\
        Sun Nov 29 16:24:28 UTC 2026\t1060\t9100\t100\n\
        Sun Nov 29 16:24:29 UTC 2026\t1120\t9300\t100\n\
        Sun Nov 29 16:24:30 UTC 2026\t1180\t9191\t100\n\
        Sun Nov 29 16:24:31 UTC 2026\t1190\t8500\t0\n";

    #[test]
    fn parses_the_mem_log() {
        let s = parse_mem_log(LOG).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(
            s[1],
            MemSample {
                epoch: 1030,
                rss_kib: 9000,
                conns: 100
            }
        );
        assert!(parse_mem_log("a\tb\tc\n").is_err());
        assert!(parse_mem_log("d\t1\tx\t3\n").is_err());
    }

    #[test]
    fn growth_after_warmup() {
        let s = parse_mem_log(LOG).unwrap();
        // Peak conns from epoch 1030; 30 s warm-up -> baseline at 1060 (9100 KiB); the last
        // sample at 100 conns is at 1180 (9191 KiB): +1.0%, peak 9300: +2.2%.
        let g = growth(&s, Duration::from_secs(30)).unwrap();
        assert_eq!(
            (g.base_kib, g.end_kib, g.peak_kib, g.conns),
            (9100, 9191, 9300, 100)
        );
        assert!((g.growth_pct - 1.0).abs() < 1e-9, "{}", g.growth_pct);
        assert!((g.peak_pct - 2.1978).abs() < 1e-3);
        assert_eq!((g.from_min, g.to_min), (1.0, 3.0));
        assert!(g.line().contains("+1.00%"));
        assert!(growth(&s, Duration::from_secs(600)).is_none());
        assert!(growth(&[], Duration::ZERO).is_none());
    }

    #[test]
    fn draws_svg_with_text_and_png() {
        let s = parse_mem_log(LOG).unwrap();
        let dir = std::env::temp_dir().join(format!("uring-comet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = dir.join("mem.svg");
        draw(&s, &svg, "test chart").unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for want in [
            "test chart",
            "minutes elapsed",
            "server RSS (MiB)",
            "connections",
        ] {
            assert!(text.contains(want), "{want:?} missing from the SVG");
        }
        let png = dir.join("mem.png");
        draw(&s, &png, "test chart").unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        assert!(draw(&s, &dir.join("mem.txt"), "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
