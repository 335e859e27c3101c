//! Plots of a run, as SVG and PNG: the latency CDF per transport, and latency over time
//! with one panel per transport and the fault timeline marked.
//!
//! PNG files are drawn with plotters' bitmap backend and a font embedded in the binary
//! (Ubuntu Light from `epaint_default_fonts`), so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::faults::FaultTimeline;
use crate::stats::Sample;

/// Colours of the transports, in the order they are passed.
const COLOURS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];
/// Size of every plot, in pixels.
const SIZE: (u32, u32) = (900, 600);
/// Shade of blackhole windows.
const BLACKHOLE: RGBColor = RGBColor(200, 200, 200);
/// Colour of NAT rebinding lines.
const REBIND: RGBColor = RGBColor(230, 140, 0);

/// A failure to draw or write a plot.
#[derive(Debug, thiserror::Error)]
#[error("failed to draw {path}: {message}")]
pub struct PlotError {
    /// File being drawn.
    pub path: String,
    /// Error from the drawing library.
    pub message: String,
}

/// One transport's samples and fault timeline.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Transport name, `quic` or `ws`.
    pub name: &'a str,
    /// Latency samples.
    pub samples: &'a [Sample],
    /// Faults during this transport's run.
    pub faults: &'a FaultTimeline,
}

fn plot_error(path: &Path, error: impl std::fmt::Display) -> PlotError {
    PlotError {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// Registers the embedded font once; plotters needs it for every backend to lay out text.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(
                "sans-serif",
                style,
                epaint_default_fonts::UBUNTU_LIGHT,
            )
            .is_err()
            {
                tracing::error!("the embedded plot font is invalid; plots will have no text");
            }
        }
    });
}

/// Draws into `path` with `draw`: PNG when the name ends in `.png`, SVG otherwise.
macro_rules! render {
    ($path:expr, $draw:ident, $($argument:expr),*) => {{
        let path: &Path = $path;
        register_font();
        let is_png = path.extension().is_some_and(|extension| extension == "png");
        if is_png {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            $draw(&root, $($argument),*).map_err(|error| plot_error(path, error))?;
            root.present().map_err(|error| plot_error(path, error))
        } else {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            $draw(&root, $($argument),*).map_err(|error| plot_error(path, error))?;
            root.present().map_err(|error| plot_error(path, error))
        }
    }};
}

/// Draws the cumulative distribution of latency, one line per transport, under `title`.
pub fn latency_cdf(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), PlotError> {
    render!(path, draw_cdf, title, series)
}

/// Draws each delivery's latency against its send time, one panel per transport, with
/// blackhole windows shaded and NAT rebindings as vertical lines.
pub fn latency_over_time(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), PlotError> {
    render!(path, draw_over_time, title, series)
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_cdf<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series<'_>],
) -> DrawResult<DB> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|series| (series.name, cdf_points(series.samples)))
        .collect();
    let max_latency = curves
        .iter()
        .flat_map(|(_, points)| points.last().map(|point| point.0))
        .fold(1.0_f64, f64::max);

    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((0.1_f64..max_latency * 1.05).log_scale(), 0.0_f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of deliveries")
        .draw()?;

    for (index, (name, points)) in curves.into_iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
}

fn draw_over_time<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series<'_>],
) -> DrawResult<DB> {
    let max_time = series
        .iter()
        .flat_map(|series| {
            series
                .samples
                .iter()
                .map(|sample| sample.sent_at_ms / 1000.0)
        })
        .fold(1.0_f64, f64::max)
        * 1.02;
    let max_latency = series
        .iter()
        .flat_map(|series| series.samples.iter().map(|sample| sample.latency_ms))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let min_latency = series
        .iter()
        .flat_map(|series| series.samples.iter().map(|sample| sample.latency_ms))
        .fold(max_latency, f64::min)
        * 0.5;
    let min_latency = min_latency.max(0.1);

    root.fill(&WHITE)?;
    let titled = root.titled(title, ("sans-serif", 22))?;
    let panels = titled.split_evenly((series.len().max(1), 1));
    for (index, (one, panel)) in series.iter().zip(&panels).enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let is_last = index + 1 == series.len();
        let ranges = TimeRanges {
            max_time,
            latency: (min_latency, max_latency),
        };
        draw_time_panel(panel, one, colour, ranges, is_last)?;
    }
    Ok(())
}

/// Axis ranges shared by every panel, so the panels compare directly.
struct TimeRanges {
    max_time: f64,
    latency: (f64, f64),
}

fn draw_time_panel<DB: DrawingBackend>(
    panel: &DrawingArea<DB, Shift>,
    series: &Series<'_>,
    colour: RGBColor,
    ranges: TimeRanges,
    is_last: bool,
) -> DrawResult<DB> {
    let TimeRanges {
        max_time,
        latency: (min_latency, max_latency),
    } = ranges;
    let mut chart = ChartBuilder::on(panel)
        .margin(10)
        .x_label_area_size(if is_last { 40 } else { 20 })
        .y_label_area_size(55)
        .build_cartesian_2d(0.0_f64..max_time, (min_latency..max_latency).log_scale())?;
    let mut mesh = chart.configure_mesh();
    mesh.y_desc(format!("{} latency (ms)", series.name));
    if is_last {
        mesh.x_desc("send time since the clients started (s)");
    }
    mesh.draw()?;

    let faults = series.faults;
    let shade = BLACKHOLE.mix(0.6).filled();
    let windows: Vec<_> = faults
        .blackholes
        .iter()
        .filter(|window| window.end_s > 0.0 && window.start_s < max_time)
        .map(|window| {
            let corners = [
                (window.start_s.max(0.0), min_latency),
                (window.end_s.min(max_time), max_latency),
            ];
            Rectangle::new(corners, shade)
        })
        .collect();
    if !windows.is_empty() {
        chart
            .draw_series(windows)?
            .label("blackhole")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], shade));
    }
    let rebinds: Vec<_> = faults
        .rebinds_s
        .iter()
        .filter(|at| (0.0..=max_time).contains(*at))
        .map(|&at| {
            PathElement::new(
                [(at, min_latency), (at, max_latency)],
                REBIND.stroke_width(2),
            )
        })
        .collect();
    if !rebinds.is_empty() {
        chart
            .draw_series(rebinds)?
            .label("NAT rebinding")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], REBIND.stroke_width(2)));
    }

    let points = series.samples.iter().map(|sample| {
        Circle::new(
            (
                sample.sent_at_ms / 1000.0,
                sample.latency_ms.max(min_latency),
            ),
            2,
            colour.filled(),
        )
    });
    chart
        .draw_series(points)?
        .label(series.name)
        .legend(move |(x, y)| Circle::new((x + 7, y), 3, colour.filled()));
    chart
        .configure_series_labels()
        // The slow deliveries are at the top of a panel, so the legend goes below them.
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
}

/// Returns `(latency, cumulative fraction)` points of the samples, sorted by latency.
pub fn cdf_points(samples: &[Sample]) -> Vec<(f64, f64)> {
    let mut latencies: Vec<f64> = samples
        .iter()
        .map(|sample| sample.latency_ms.max(0.1))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let count = latencies.len() as f64;
    latencies
        .into_iter()
        .enumerate()
        .map(|(index, latency)| (latency, (index + 1) as f64 / count))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::BlackholeWindow;
    use crate::workload::ConversationKind;

    fn sample(sent_at_ms: f64, latency_ms: f64) -> Sample {
        Sample {
            kind: ConversationKind::Quiet,
            sent_at_ms,
            latency_ms,
        }
    }

    #[test]
    fn cdf_points_are_sorted_and_end_at_one() {
        let samples = [sample(0.0, 30.0), sample(1.0, 10.0), sample(2.0, 20.0)];
        let points = cdf_points(&samples);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].0, 10.0);
        assert_eq!(points[2], (30.0, 1.0));
    }

    #[test]
    fn plots_write_svg_and_png_files() {
        let dir = tempfile::tempdir().unwrap();
        let quic = [sample(100.0, 35.0), sample(600.0, 40.0)];
        let ws = [sample(100.0, 50.0), sample(600.0, 250.0)];
        let faults = FaultTimeline {
            blackholes: vec![BlackholeWindow {
                direction: "uplink".into(),
                start_s: 0.2,
                end_s: 0.4,
            }],
            rebinds_s: vec![0.5],
        };
        let series = [
            Series {
                name: "quic",
                samples: &quic,
                faults: &faults,
            },
            Series {
                name: "ws",
                samples: &ws,
                faults: &FaultTimeline::default(),
            },
        ];

        let cdf = dir.path().join("cdf.svg");
        latency_cdf(&cdf, "CDF", &series).unwrap();
        let text = std::fs::read_to_string(&cdf).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("quic"));

        let timeline = dir.path().join("timeline.svg");
        latency_over_time(&timeline, "over time", &series).unwrap();
        let text = std::fs::read_to_string(&timeline).unwrap();
        assert!(text.contains("<circle"));
        assert!(text.contains("NAT rebinding"));
        assert!(text.contains("blackhole"));

        for name in ["cdf.png", "timeline.png"] {
            let path = dir.path().join(name);
            if name == "cdf.png" {
                latency_cdf(&path, "CDF", &series).unwrap();
            } else {
                latency_over_time(&path, "over time", &series).unwrap();
            }
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is not a PNG");
        }
    }
}
