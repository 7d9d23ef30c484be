//! SVG plots per scenario variant: latency CDFs and the watched backend's
//! share of the load over time, one line per algorithm.

use std::path::Path;

use lb_sim::Health;
use plotters::prelude::*;

use crate::Outcome;

/// A written plot: its file name and what it shows.
pub(crate) struct Plot {
    pub(crate) scenario: u8,
    pub(crate) file: String,
    pub(crate) alt: String,
}

type Failure = Box<dyn std::error::Error>;

/// The part of a variant that picks the plot ("one slow" of "one slow, client-side").
fn family(o: &Outcome) -> &'static str {
    o.case.variant.split(',').next().unwrap_or_default()
}

/// A line's name: the algorithm, and the rest of the variant.
fn label(o: &Outcome) -> String {
    match o.case.variant.split_once(", ") {
        Some((_, rest)) => format!("{} ({rest})", o.case.algorithm),
        None => o.case.algorithm.clone(),
    }
}

/// The runs drawn together: one scenario variant family under one health
/// mode (the full machinery where the scenario has it).
fn groups(outcomes: &[Outcome]) -> Vec<Vec<&Outcome>> {
    let mut groups: Vec<Vec<&Outcome>> = Vec::new();
    for o in outcomes {
        let preferred = if outcomes.iter().any(|p| {
            p.case.scenario == o.case.scenario && family(p) == family(o) && p.case.health == Health::Full
        }) {
            Health::Full
        } else {
            Health::Bare
        };
        if o.case.health != preferred {
            continue;
        }
        match groups.iter_mut().find(|g| g[0].case.scenario == o.case.scenario && family(g[0]) == family(o)) {
            Some(group) => group.push(o),
            None => groups.push(vec![o]),
        }
    }
    groups
}

fn slug(o: &Outcome) -> String {
    let variant: String =
        family(o).chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    if variant.is_empty() {
        o.case.scenario.slug.to_string()
    } else {
        format!("{}-{variant}", o.case.scenario.slug)
    }
}

/// Writes every plot to `dir`.
pub(crate) fn write_all(outcomes: &[Outcome], dir: &Path) -> Result<Vec<Plot>, Failure> {
    let mut plots = Vec::new();
    for group in groups(outcomes) {
        let first = group[0];
        let name = slug(first);
        let variant = family(first);
        let what = format!(
            "{}{}{variant} ({})",
            first.case.scenario.title,
            if variant.is_empty() { "" } else { ", " },
            first.case.health.label()
        );
        let cdf = format!("{name}-cdf.svg");
        latency_cdf(&group, &dir.join(&cdf), &what)?;
        plots.push(Plot {
            scenario: first.case.scenario.number,
            file: cdf,
            alt: format!("Latency CDF: {what}"),
        });
        let load = format!("{name}-load.svg");
        load_over_time(&group, &dir.join(&load), &what)?;
        plots.push(Plot {
            scenario: first.case.scenario.number,
            file: load,
            alt: format!("Load over time: {what}"),
        });
    }
    Ok(plots)
}

fn color(i: usize) -> RGBColor {
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// The latency CDF drawn from its tail: the fraction of requests slower
/// than x, on log scales, so p99 (0.01) and p99.9 (0.001) can be read off.
fn latency_cdf(group: &[&Outcome], path: &Path, what: &str) -> Result<(), Failure> {
    let lowest = group.iter().flat_map(|o| o.cdf.iter().map(|p| p.0)).fold(f64::MAX, f64::min).max(0.1);
    let highest = group.iter().flat_map(|o| o.cdf.iter().map(|p| p.0)).fold(0.0, f64::max).max(lowest * 10.0);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(what, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lowest * 0.9..highest * 1.1).log_scale(), (1e-4..1.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log)")
        .y_desc("fraction of requests slower (log)")
        .y_label_formatter(&|y| format!("{y:.4}"))
        .draw()?;
    for (i, o) in group.iter().enumerate() {
        let c = color(i);
        let tail = o.cdf.iter().map(|&(ms, q)| (ms.max(lowest), 1.0 - q));
        chart
            .draw_series(LineSeries::new(tail, c.stroke_width(2)))?
            .label(label(o))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn load_over_time(group: &[&Outcome], path: &Path, what: &str) -> Result<(), Failure> {
    let buckets = group.iter().map(|o| o.watched_share.len()).max().unwrap_or(1).max(1);
    let bucket_secs = group[0].case.setup.bucket.as_secs_f64();
    let top = group.iter().flat_map(|o| o.watched_share.iter().copied()).fold(0.0, f64::max).max(0.05) * 1.1;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let watched = match group[0].case.watch {
        Some(b) => format!("backend {b}'s share of the tries"),
        None => "the busiest backend's share of the tries".to_string(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(what, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..buckets as f64 * bucket_secs, 0.0..top.min(1.0))?;
    chart.configure_mesh().x_desc("simulated time (s)").y_desc(watched).draw()?;
    for (i, o) in group.iter().enumerate() {
        let c = color(i);
        let points = o.watched_share.iter().enumerate().map(|(b, &s)| ((b as f64 + 0.5) * bucket_secs, s));
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(label(o))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
