//! SVG plots of a run: the latency CDF per transport and latency over time.

use std::path::Path;

use plotters::prelude::*;

use crate::stats::Sample;

/// Colours of the transports, in the order they are passed.
const COLOURS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

/// A failure to draw or write a plot.
#[derive(Debug, thiserror::Error)]
#[error("failed to draw {path}: {message}")]
pub struct PlotError {
    /// File being drawn.
    pub path: String,
    /// Error from the drawing library.
    pub message: String,
}

fn plot_error(path: &Path, error: impl std::fmt::Display) -> PlotError {
    PlotError {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// Draws the cumulative distribution of latency, one line per named series.
pub fn latency_cdf(path: &Path, series: &[(&str, &[Sample])]) -> Result<(), PlotError> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, samples)| (*name, cdf_points(samples)))
        .collect();
    let max_latency = curves
        .iter()
        .flat_map(|(_, points)| points.last().map(|point| point.0))
        .fold(1.0_f64, f64::max);

    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| plot_error(path, error))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Send-to-delivery latency, CDF", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((0.1_f64..max_latency * 1.05).log_scale(), 0.0_f64..1.0)
        .map_err(|error| plot_error(path, error))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of deliveries")
        .draw()
        .map_err(|error| plot_error(path, error))?;

    for (index, (name, points)) in curves.into_iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|error| plot_error(path, error))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|error| plot_error(path, error))?;
    root.present().map_err(|error| plot_error(path, error))
}

/// Draws each delivery's latency against its send time, one colour per named series.
pub fn latency_over_time(path: &Path, series: &[(&str, &[Sample])]) -> Result<(), PlotError> {
    let max_time = series
        .iter()
        .flat_map(|(_, samples)| samples.iter().map(|sample| sample.sent_at_ms / 1000.0))
        .fold(1.0_f64, f64::max);
    let max_latency = series
        .iter()
        .flat_map(|(_, samples)| samples.iter().map(|sample| sample.latency_ms))
        .fold(1.0_f64, f64::max);

    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| plot_error(path, error))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency over time", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(
            0.0_f64..max_time * 1.02,
            (0.1_f64..max_latency * 1.1).log_scale(),
        )
        .map_err(|error| plot_error(path, error))?;
    chart
        .configure_mesh()
        .x_desc("send time since the first client connected (s)")
        .y_desc("latency (ms, log scale)")
        .draw()
        .map_err(|error| plot_error(path, error))?;

    for (index, (name, samples)) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let points = samples.iter().map(|sample| {
            Circle::new(
                (sample.sent_at_ms / 1000.0, sample.latency_ms.max(0.1)),
                2,
                colour.filled(),
            )
        });
        chart
            .draw_series(points)
            .map_err(|error| plot_error(path, error))?
            .label(*name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, colour.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|error| plot_error(path, error))?;
    root.present().map_err(|error| plot_error(path, error))
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
    fn plots_write_svg_files() {
        let dir = tempfile::tempdir().unwrap();
        let quic = [sample(100.0, 35.0), sample(600.0, 40.0)];
        let ws = [sample(100.0, 50.0), sample(600.0, 250.0)];
        let series = [("quic", &quic[..]), ("ws", &ws[..])];

        let cdf = dir.path().join("cdf.svg");
        latency_cdf(&cdf, &series).unwrap();
        let text = std::fs::read_to_string(&cdf).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("quic"));

        let timeline = dir.path().join("timeline.svg");
        latency_over_time(&timeline, &series).unwrap();
        assert!(
            std::fs::read_to_string(&timeline)
                .unwrap()
                .contains("<circle")
        );
    }
}
