//! SVG plots of a report: latency by percentile, and delivered messages/s over time.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

const WIDTH: u32 = 800;
const PANEL_HEIGHT: u32 = 360;

/// x position of a percentile on a "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.999_999)).log10()
}

pub(crate) fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let panels =
        usize::from(!report.latency_curve.is_empty()) + usize::from(!report.timeline.is_empty());
    if panels == 0 {
        return Err("nothing to plot: this scenario records no latencies or rates".into());
    }
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * panels as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels, 1));
    let mut next = areas.iter();
    let title = format!(
        "{} {} ({:?}, {} clients)",
        report.target,
        report.scenario.name(),
        report.dialect,
        report.clients
    );
    if !report.latency_curve.is_empty() {
        let area = next.next().expect("one area per panel");
        let max_us = report
            .latency_curve
            .iter()
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(1)
            .max(1);
        let points: Vec<(f64, f64)> = report
            .latency_curve
            .iter()
            .map(|(p, us)| (nines(*p), *us as f64 / 1000.0))
            .collect();
        let x_max = points.iter().map(|(x, _)| *x).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("latency by percentile: {title}"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..(max_us as f64 / 1000.0 * 1.1))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| format!("{}", 100.0 - 100.0 * 10f64.powf(-x)))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(points.clone(), &BLUE))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))
            .map_err(|e| e.to_string())?;
    }
    if !report.timeline.is_empty() {
        let area = next.next().expect("one area per panel");
        let x_max = report.timeline.iter().map(|(t, _)| *t).fold(0.1, f64::max);
        let y_max = report.timeline.iter().map(|(_, r)| *r).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("delivered messages/s: {title}"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("messages/s")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(report.timeline.clone(), &RED))
            .map_err(|e| e.to_string())?;
    }
    root.present()
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
