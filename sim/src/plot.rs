//! SVG pictures of a simulation run.
//!
//! The simulator turns its event log into a [`Timeline`] and calls [`write_svg`]. This
//! module owns only layout and drawing: a top panel with one row per cluster and time
//! across (partitions, crash intervals and import changes), and a bottom panel with the
//! CDF of propagation latency with p50 and p99 marked. It reads no clock and keeps no
//! state, so the same timeline always gives the same bytes.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Most cluster rows drawn; a timeline with more clusters shows the first `ROWS_MAX`
/// and says so in its title.
pub const ROWS_MAX: usize = 200;

/// Picture width in pixels; the height follows the number of rows.
const WIDTH_PX: u32 = 1200;
/// Height of the CDF panel in pixels.
const CDF_PANEL_PX: u32 = 380;
/// Cluster labels longer than this are cut and end in an ellipsis.
const LABEL_CHARS_MAX: usize = 28;
/// Partition labels in the legend longer than this are cut likewise.
const LEGEND_LABEL_CHARS_MAX: usize = 60;
/// Distinct partition labels listed in the legend before "+N more".
const LEGEND_PARTITIONS_MAX: usize = 8;
/// Narrowest shaded interval in pixels, so a short crash stays visible.
const SPAN_PX_MIN: f64 = 2.0;

const FONT: &str = "sans-serif";
const TEXT: RGBColor = RGBColor(33, 37, 41);
const MUTED: RGBColor = RGBColor(110, 117, 125);
const STRIPE: RGBColor = RGBColor(244, 246, 249);
const GRID: RGBColor = RGBColor(225, 229, 234);
const CRASH: RGBColor = RGBColor(214, 39, 40);
const CRASH_TEXT: RGBColor = RGBColor(110, 10, 10);
const IMPORT: RGBColor = RGBColor(25, 35, 95);
const CDF_LINE: RGBColor = RGBColor(31, 119, 180);
const P50: RGBColor = RGBColor(230, 120, 0);
const P99: RGBColor = RGBColor(148, 60, 170);
/// Partition shades, cycled by distinct label; red is kept for crashes.
const PARTITION_COLOURS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const PARTITION_ALPHA: f64 = 0.22;
const CRASH_ALPHA: f64 = 0.5;

/// A labelled interval of simulated time. An end past the timeline's duration (even
/// `u64::MAX`) is drawn up to the right edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Written on the shade where it fits, and in the legend for partitions.
    pub label: String,
}

/// Everything one picture shows. Row indexes refer to `clusters`.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub title: String,
    /// Row labels, top to bottom.
    pub clusters: Vec<String>,
    pub duration_ms: u64,
    /// Shaded over the listed rows; an empty list shades every row.
    pub partitions: Vec<(Span, Vec<usize>)>,
    /// Cluster row and the interval a replica or the whole cluster was down.
    pub crashes: Vec<(usize, Span)>,
    /// Cluster row and the time an import changed on that cluster.
    pub import_changes: Vec<(usize, u64)>,
    /// Propagation latency samples in milliseconds, for the CDF panel.
    pub propagation_ms: Vec<f64>,
}

/// Why [`write_svg`] produced no picture.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The timeline names a row that is not in `clusters`; nothing was written.
    #[error("{what} refers to cluster row {row}, but the timeline has {rows} clusters")]
    RowOutOfRange {
        what: &'static str,
        row: usize,
        rows: usize,
    },
    /// Plotters failed while laying out or drawing; nothing was written.
    #[error("drawing the timeline failed: {0}")]
    Draw(String),
    /// The rendered SVG could not be written; the file may be missing or partial.
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Renders `timeline` as an SVG file at `path`, replacing any file there.
///
/// # Errors
///
/// [`PlotError::RowOutOfRange`] if a partition, crash or import change names a row
/// past `clusters`, [`PlotError::Draw`] if plotters fails, and [`PlotError::Io`] if the
/// file cannot be written.
pub fn write_svg(path: &Path, timeline: &Timeline) -> Result<(), PlotError> {
    check_rows(timeline)?;
    let layout = Layout::new(timeline);
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH_PX, layout.height_px())).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, rest) = root.split_vertically(layout.header_px);
        let (top, bottom) = rest.split_vertically(layout.timeline_px);
        draw_header(&header, timeline, &layout)?;
        draw_timeline(&root, &top, timeline, &layout)?;
        draw_cdf(&root, &bottom, &timeline.propagation_ms, layout.axis_px)?;
        root.present().map_err(draw_error)?;
    }
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn draw_error<E: std::error::Error + Send + Sync>(error: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError::Draw(error.to_string())
}

fn check_rows(timeline: &Timeline) -> Result<(), PlotError> {
    let rows = timeline.clusters.len();
    let partition_rows = timeline
        .partitions
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|&row| ("a partition", row)));
    let crash_rows = timeline.crashes.iter().map(|&(row, _)| ("a crash", row));
    let import_rows = timeline
        .import_changes
        .iter()
        .map(|&(row, _)| ("an import change", row));
    match partition_rows
        .chain(crash_rows)
        .chain(import_rows)
        .find(|&(_, row)| row >= rows)
    {
        Some((what, row)) => Err(PlotError::RowOutOfRange { what, row, rows }),
        None => Ok(()),
    }
}

/// Sizes derived from the timeline before anything is drawn.
#[derive(Debug)]
struct Layout {
    rows_shown: usize,
    row_px: u32,
    /// Width of the row label area. The CDF panel takes the same width, up to
    /// `CDF_AXIS_PX_MAX`, so the two plots line up unless cluster names are long.
    axis_px: u32,
    legend: Vec<LegendLine>,
    header_px: u32,
    timeline_px: u32,
}

#[derive(Debug)]
struct LegendLine {
    items: Vec<(i32, LegendItem)>,
}

#[derive(Debug)]
enum LegendItem {
    Partition(RGBColor, String),
    Crash,
    ImportChange,
    Note(String),
}

const HEADER_TOP_PX: u32 = 74;
const LEGEND_LINE_PX: u32 = 24;
const LEGEND_FONT_PX: u32 = 13;
const TIMELINE_TOP_PX: u32 = 8;
const TIMELINE_BOTTOM_PX: u32 = 52;

impl Layout {
    fn new(timeline: &Timeline) -> Layout {
        let rows_shown = timeline.clusters.len().min(ROWS_MAX);
        let row_px = match rows_shown {
            0..=8 => 44,
            9..=20 => 32,
            21..=60 => 20,
            _ => 13,
        };
        let label_chars = timeline.clusters[..rows_shown]
            .iter()
            .map(|name| short_label(name, LABEL_CHARS_MAX).chars().count())
            .max()
            .unwrap_or(0);
        let axis_px = (text_width_px(label_chars, row_font_px(row_px)) + 18).clamp(70, 240);
        let legend = legend_lines(timeline);
        let header_px = HEADER_TOP_PX + LEGEND_LINE_PX * legend.len() as u32;
        let timeline_px =
            TIMELINE_TOP_PX + row_px * (rows_shown.max(1) as u32) + TIMELINE_BOTTOM_PX;
        Layout {
            rows_shown,
            row_px,
            axis_px,
            legend,
            header_px,
            timeline_px,
        }
    }

    fn height_px(&self) -> u32 {
        self.header_px + self.timeline_px + CDF_PANEL_PX
    }
}

fn row_font_px(row_px: u32) -> u32 {
    (row_px * 3 / 4).clamp(10, 14)
}

/// The sans-serif font at `px` rendered pixels. Plotters' SVG backend writes
/// `font-size` as the requested size divided by 1.24, so ask for that much more.
fn font(px: u32) -> FontDesc<'static> {
    (FONT, f64::from(px) * 1.24).into_font()
}

/// A generous estimate of rendered text width; SVG gives no metrics at draw time.
fn text_width_px(chars: usize, font_px: u32) -> u32 {
    (chars as f64 * f64::from(font_px) * 0.56).ceil() as u32
}

/// `name` cut to at most `chars_max` characters, the last an ellipsis if cut.
fn short_label(name: &str, chars_max: usize) -> String {
    if name.chars().count() <= chars_max {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(chars_max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Distinct partition labels in order of first appearance; a partition's colour is
/// picked by its label's position here.
fn partition_labels(timeline: &Timeline) -> Vec<&str> {
    let mut labels: Vec<&str> = Vec::new();
    for (span, _) in &timeline.partitions {
        if !labels.contains(&span.label.as_str()) {
            labels.push(&span.label);
        }
    }
    labels
}

fn partition_colour(labels: &[&str], label: &str) -> RGBColor {
    let index = labels.iter().position(|&l| l == label).unwrap_or(0);
    PARTITION_COLOURS[index % PARTITION_COLOURS.len()]
}

fn legend_lines(timeline: &Timeline) -> Vec<LegendLine> {
    let labels = partition_labels(timeline);
    let mut items: Vec<LegendItem> = labels
        .iter()
        .take(LEGEND_PARTITIONS_MAX)
        .map(|&label| LegendItem::Partition(partition_colour(&labels, label), label.to_string()))
        .collect();
    if labels.is_empty() {
        items.push(LegendItem::Partition(
            PARTITION_COLOURS[0],
            "none".to_string(),
        ));
    } else if labels.len() > LEGEND_PARTITIONS_MAX {
        let more = labels.len() - LEGEND_PARTITIONS_MAX;
        items.push(LegendItem::Note(format!("+{more} more partitions")));
    }
    items.push(LegendItem::Crash);
    items.push(LegendItem::ImportChange);
    flow_legend(items)
}

const LEGEND_LEFT_PX: i32 = 20;
const LEGEND_SWATCH_PX: i32 = 14;
const LEGEND_GAP_PX: i32 = 26;

fn legend_text(item: &LegendItem) -> String {
    match item {
        LegendItem::Partition(_, label) => {
            format!("partition: {}", short_label(label, LEGEND_LABEL_CHARS_MAX))
        }
        LegendItem::Crash => "crash / down".to_string(),
        LegendItem::ImportChange => "import change".to_string(),
        LegendItem::Note(text) => text.clone(),
    }
}

/// Places legend items left to right, wrapping before the right edge.
fn flow_legend(items: Vec<LegendItem>) -> Vec<LegendLine> {
    let right_px = WIDTH_PX as i32 - LEGEND_LEFT_PX;
    let mut lines = vec![LegendLine { items: Vec::new() }];
    let mut x = LEGEND_LEFT_PX;
    for item in items {
        let text_px = text_width_px(legend_text(&item).chars().count(), LEGEND_FONT_PX) as i32;
        let width = LEGEND_SWATCH_PX + 6 + text_px;
        let line_started = lines.last().is_some_and(|line| !line.items.is_empty());
        if line_started && x + width > right_px {
            lines.push(LegendLine { items: Vec::new() });
            x = LEGEND_LEFT_PX;
        }
        if let Some(line) = lines.last_mut() {
            line.items.push((x, item));
        }
        x += width + LEGEND_GAP_PX;
    }
    lines
}

fn title_text(timeline: &Timeline) -> String {
    let title = if timeline.title.is_empty() {
        "Shoal simulation"
    } else {
        &timeline.title
    };
    let clusters = timeline.clusters.len();
    if clusters > ROWS_MAX {
        format!("{title} (showing first {ROWS_MAX} of {clusters} clusters)")
    } else {
        title.to_string()
    }
}

fn summary_text(timeline: &Timeline) -> String {
    [
        count(timeline.clusters.len(), "cluster"),
        format!(
            "{} s simulated",
            format_number(seconds(timeline.duration_ms), 3)
        ),
        count(timeline.partitions.len(), "partition"),
        count(timeline.crashes.len(), "crash interval"),
        count(timeline.import_changes.len(), "import change"),
    ]
    .join(" · ")
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn draw_header(area: &Area<'_>, timeline: &Timeline, layout: &Layout) -> Result<(), PlotError> {
    let title = font(22).style(FontStyle::Bold).color(&TEXT);
    area.draw(&Text::new(
        title_text(timeline),
        (LEGEND_LEFT_PX, 14),
        title,
    ))
    .map_err(draw_error)?;
    let summary = font(13).color(&MUTED);
    area.draw(&Text::new(
        summary_text(timeline),
        (LEGEND_LEFT_PX, 44),
        summary,
    ))
    .map_err(draw_error)?;
    for (index, line) in layout.legend.iter().enumerate() {
        let centre_y = (HEADER_TOP_PX + LEGEND_LINE_PX * index as u32) as i32 + 4;
        for (x, item) in &line.items {
            draw_legend_item(area, *x, centre_y, item)?;
        }
    }
    Ok(())
}

fn draw_legend_item(area: &Area<'_>, x: i32, y: i32, item: &LegendItem) -> Result<(), PlotError> {
    let half = LEGEND_SWATCH_PX / 2;
    let swatch = [(x, y - half), (x + LEGEND_SWATCH_PX, y + half)];
    match item {
        LegendItem::Partition(colour, _) => {
            area.draw(&Rectangle::new(
                swatch,
                colour.mix(PARTITION_ALPHA * 1.6).filled(),
            ))
            .map_err(draw_error)?;
            area.draw(&Rectangle::new(swatch, colour.stroke_width(1)))
                .map_err(draw_error)?;
        }
        LegendItem::Crash => {
            let bar = [
                (x, y - half / 2 - 1),
                (x + LEGEND_SWATCH_PX, y + half / 2 + 1),
            ];
            area.draw(&Rectangle::new(bar, CRASH.mix(CRASH_ALPHA).filled()))
                .map_err(draw_error)?;
            area.draw(&Rectangle::new(bar, CRASH.stroke_width(1)))
                .map_err(draw_error)?;
        }
        LegendItem::ImportChange => {
            area.draw(&Circle::new((x + half, y), 4, IMPORT.filled()))
                .map_err(draw_error)?;
        }
        LegendItem::Note(_) => {}
    }
    let style = font(LEGEND_FONT_PX)
        .color(&TEXT)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let text_x = x + LEGEND_SWATCH_PX + 6;
    area.draw(&Text::new(legend_text(item), (text_x, y), style))
        .map_err(draw_error)
}

/// Simulated milliseconds as chart seconds.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Formats `value` with at most `decimals` decimals, dropping trailing zeros.
fn format_number(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Right edge of the time axis: the run's duration, stretched to any later import
/// change or span start so nothing is dropped, and one second for an empty run. Span
/// ends are clipped to it rather than stretching it ("down until the end" may be
/// recorded as `u64::MAX`).
fn end_ms(timeline: &Timeline) -> u64 {
    let partition_starts = timeline.partitions.iter().map(|(span, _)| span.start_ms);
    let crash_starts = timeline.crashes.iter().map(|(_, span)| span.start_ms);
    let imports = timeline.import_changes.iter().map(|&(_, at_ms)| at_ms);
    let end_ms = partition_starts
        .chain(crash_starts)
        .chain(imports)
        .fold(timeline.duration_ms, u64::max);
    if end_ms == 0 { 1_000 } else { end_ms }
}

/// Vertical extent of row `row` in chart units: row 0 is at the top.
fn row_band(rows: usize, row: usize, inset: f64) -> (f64, f64) {
    let bottom = (rows - row - 1) as f64;
    (bottom + inset, bottom + 1.0 - inset)
}

fn draw_timeline(
    root: &Area<'_>,
    area: &Area<'_>,
    timeline: &Timeline,
    layout: &Layout,
) -> Result<(), PlotError> {
    let rows = layout.rows_shown.max(1);
    let duration_s = seconds(end_ms(timeline));
    let mut chart = ChartBuilder::on(area)
        .margin_top(TIMELINE_TOP_PX)
        .margin_right(30)
        .margin_bottom(10)
        .x_label_area_size(TIMELINE_BOTTOM_PX - 10)
        .y_label_area_size(layout.axis_px)
        .build_cartesian_2d(0.0..duration_s, 0.0..rows as f64)
        .map_err(draw_error)?;
    draw_stripes(&mut chart, layout.rows_shown, duration_s)?;
    let decimals = axis_decimals(duration_s);
    let x_format = |v: &f64| format_number(*v, decimals);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(12)
        .x_max_light_lines(0)
        .x_label_formatter(&x_format)
        .x_desc("time (s)")
        .bold_line_style(GRID)
        .axis_style(MUTED)
        .label_style(font(13).color(&TEXT))
        .axis_desc_style(font(14).color(&TEXT))
        .draw()
        .map_err(draw_error)?;
    if layout.rows_shown == 0 {
        return draw_centred_note(&mut chart, "no clusters");
    }
    let min_span_s = min_span_s(&chart, duration_s);
    draw_partitions(&mut chart, timeline, layout, min_span_s)?;
    draw_crashes(&mut chart, timeline, layout, min_span_s)?;
    draw_span_labels(&mut chart, timeline, layout, min_span_s)?;
    draw_import_changes(&mut chart, timeline, layout)?;
    draw_row_labels(root, &chart, timeline, layout)
}

/// Decimals that tell apart the roughly ten tick labels across `range`.
fn axis_decimals(range: f64) -> usize {
    let step = range / 10.0;
    if step >= 1.0 || step <= 0.0 {
        return 0;
    }
    (-step.log10()).ceil().clamp(0.0, 6.0) as usize
}

/// Chart seconds covered by [`SPAN_PX_MIN`] pixels.
fn min_span_s(chart: &Chart<'_, '_>, duration_s: f64) -> f64 {
    let (width_px, _) = chart.plotting_area().dim_in_pixel();
    duration_s * SPAN_PX_MIN / f64::from(width_px.max(1))
}

/// Clamps `span` to the chart and widens it to be visible; `None` if it lies outside.
fn span_s(span: &Span, duration_s: f64, min_span_s: f64) -> Option<(f64, f64)> {
    let start = seconds(span.start_ms.min(span.end_ms));
    let end = seconds(span.start_ms.max(span.end_ms)).min(duration_s);
    if start >= duration_s {
        return None;
    }
    Some((start, end.max(start + min_span_s)))
}

fn draw_stripes(chart: &mut Chart<'_, '_>, rows: usize, duration_s: f64) -> Result<(), PlotError> {
    let stripes = (0..rows).filter(|row| row % 2 == 1).map(|row| {
        let (y0, y1) = row_band(rows, row, 0.0);
        Rectangle::new([(0.0, y0), (duration_s, y1)], STRIPE.filled())
    });
    chart.draw_series(stripes).map_err(draw_error)?;
    Ok(())
}

/// Sorted runs of consecutive shown rows as inclusive `(first, last)`; an empty list
/// means every shown row.
fn row_runs(listed: &[usize], rows_shown: usize) -> Vec<(usize, usize)> {
    let mut rows: Vec<usize> = if listed.is_empty() {
        (0..rows_shown).collect()
    } else {
        listed
            .iter()
            .copied()
            .filter(|&row| row < rows_shown)
            .collect()
    };
    rows.sort_unstable();
    rows.dedup();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for row in rows {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == row => *last = row,
            _ => runs.push((row, row)),
        }
    }
    runs
}

/// Chart-unit boxes `[(x0, y_bottom), (x1, y_top)]` a partition shades.
fn partition_boxes(
    span: &Span,
    listed: &[usize],
    rows_shown: usize,
    duration_s: f64,
    min_span_s: f64,
) -> Vec<[(f64, f64); 2]> {
    let Some((x0, x1)) = span_s(span, duration_s, min_span_s) else {
        return Vec::new();
    };
    row_runs(listed, rows_shown)
        .into_iter()
        .map(|(first, last)| {
            let (bottom, _) = row_band(rows_shown, last, 0.0);
            let (_, top) = row_band(rows_shown, first, 0.0);
            [(x0, bottom), (x1, top)]
        })
        .collect()
}

fn draw_partitions(
    chart: &mut Chart<'_, '_>,
    timeline: &Timeline,
    layout: &Layout,
    min_span_s: f64,
) -> Result<(), PlotError> {
    let labels = partition_labels(timeline);
    let duration_s = chart.x_range().end;
    for (span, listed) in &timeline.partitions {
        let colour = partition_colour(&labels, &span.label);
        let boxes = partition_boxes(span, listed, layout.rows_shown, duration_s, min_span_s);
        let fills = boxes
            .iter()
            .map(|b| Rectangle::new(*b, colour.mix(PARTITION_ALPHA).filled()));
        chart.draw_series(fills).map_err(draw_error)?;
        let edges = boxes
            .iter()
            .map(|b| Rectangle::new(*b, colour.mix(0.8).stroke_width(1)));
        chart.draw_series(edges).map_err(draw_error)?;
    }
    Ok(())
}

/// Fraction of a row left blank above and below a crash bar.
fn crash_inset(row_px: u32) -> f64 {
    if row_px >= 32 { 0.3 } else { 0.18 }
}

fn draw_crashes(
    chart: &mut Chart<'_, '_>,
    timeline: &Timeline,
    layout: &Layout,
    min_span_s: f64,
) -> Result<(), PlotError> {
    let rows = layout.rows_shown;
    let duration_s = chart.x_range().end;
    let inset = crash_inset(layout.row_px);
    let bars: Vec<[(f64, f64); 2]> = timeline
        .crashes
        .iter()
        .filter(|(row, _)| *row < rows)
        .filter_map(|(row, span)| {
            let (x0, x1) = span_s(span, duration_s, min_span_s)?;
            let (y0, y1) = row_band(rows, *row, inset);
            Some([(x0, y0), (x1, y1)])
        })
        .collect();
    let fills = bars
        .iter()
        .map(|b| Rectangle::new(*b, CRASH.mix(CRASH_ALPHA).filled()));
    chart.draw_series(fills).map_err(draw_error)?;
    let edges = bars
        .iter()
        .map(|b| Rectangle::new(*b, CRASH.stroke_width(1)));
    chart.draw_series(edges).map_err(draw_error)?;
    Ok(())
}

fn draw_import_changes(
    chart: &mut Chart<'_, '_>,
    timeline: &Timeline,
    layout: &Layout,
) -> Result<(), PlotError> {
    let rows = layout.rows_shown;
    let duration_s = chart.x_range().end;
    let radius = match layout.row_px {
        32.. => 4,
        20.. => 3,
        _ => 2,
    };
    let dots = timeline
        .import_changes
        .iter()
        .filter(|&&(row, at_ms)| row < rows && seconds(at_ms) <= duration_s)
        .map(|&(row, at_ms)| {
            let (y0, y1) = row_band(rows, row, 0.0);
            Circle::new(
                (seconds(at_ms), f64::midpoint(y0, y1)),
                radius,
                IMPORT.filled(),
            )
        });
    chart.draw_series(dots).map_err(draw_error)?;
    Ok(())
}

const SPAN_FONT_PX: u32 = 12;

/// Writes each partition's label on its first shaded box and each crash's label in its
/// bar, where they fit; the legend carries the partition labels either way.
fn draw_span_labels(
    chart: &mut Chart<'_, '_>,
    timeline: &Timeline,
    layout: &Layout,
    min_span_s: f64,
) -> Result<(), PlotError> {
    let duration_s = chart.x_range().end;
    let labels = partition_labels(timeline);
    for (span, listed) in &timeline.partitions {
        let boxes = partition_boxes(span, listed, layout.rows_shown, duration_s, min_span_s);
        let Some([(x0, _), (x1, top)]) = boxes.first().copied() else {
            continue;
        };
        let colour = partition_colour(&labels, &span.label);
        draw_label_in(chart, &span.label, (x0, top), x1, colour, true)?;
    }
    if layout.row_px < 32 {
        return Ok(());
    }
    let rows = layout.rows_shown;
    for (row, span) in timeline.crashes.iter().filter(|(row, _)| *row < rows) {
        let Some((x0, x1)) = span_s(span, duration_s, min_span_s) else {
            continue;
        };
        let (y0, y1) = row_band(rows, *row, 0.0);
        draw_label_in(
            chart,
            &span.label,
            (x0, f64::midpoint(y0, y1)),
            x1,
            CRASH_TEXT,
            false,
        )?;
    }
    Ok(())
}

/// Draws `label` starting at `anchor` if it fits before `x_end`. A `top` label hangs
/// below the anchor on a white backing; otherwise it is centred on the anchor's height.
fn draw_label_in(
    chart: &mut Chart<'_, '_>,
    label: &str,
    anchor: (f64, f64),
    x_end: f64,
    colour: RGBColor,
    top: bool,
) -> Result<(), PlotError> {
    let width_px = chart.backend_coord(&(x_end, anchor.1)).0 - chart.backend_coord(&anchor).0;
    let text_px = text_width_px(label.chars().count(), SPAN_FONT_PX) as i32;
    if label.is_empty() || width_px < text_px + 10 {
        return Ok(());
    }
    let offset = if top {
        let backing = Rectangle::new([(3, 2), (text_px + 9, 16)], WHITE.mix(0.8).filled());
        let backing = EmptyElement::at(anchor) + backing;
        chart
            .draw_series(std::iter::once(backing))
            .map_err(draw_error)?;
        (6, 9)
    } else {
        (5, 0)
    };
    let style = font(SPAN_FONT_PX)
        .color(&colour)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let text = EmptyElement::at(anchor) + Text::new(label.to_string(), offset, style);
    chart
        .draw_series(std::iter::once(text))
        .map_err(draw_error)?;
    Ok(())
}

fn draw_row_labels(
    root: &Area<'_>,
    chart: &Chart<'_, '_>,
    timeline: &Timeline,
    layout: &Layout,
) -> Result<(), PlotError> {
    let font_px = row_font_px(layout.row_px);
    let style = font(font_px)
        .color(&TEXT)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (row, name) in timeline.clusters.iter().take(layout.rows_shown).enumerate() {
        let (y0, y1) = row_band(layout.rows_shown, row, 0.0);
        let (x, y) = chart.backend_coord(&(0.0, f64::midpoint(y0, y1)));
        root.draw(&Text::new(
            short_label(name, LABEL_CHARS_MAX),
            (x - 8, y),
            style.clone(),
        ))
        .map_err(draw_error)?;
    }
    Ok(())
}

fn draw_centred_note<X>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, RangedCoordf64>>,
    note: &str,
) -> Result<(), PlotError>
where
    X: Ranged<ValueType = f64>,
{
    let x = chart.x_range();
    let y = chart.y_range();
    let centre = (f64::midpoint(x.start, x.end), f64::midpoint(y.start, y.end));
    let style = font(20)
        .color(&MUTED)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let text = Text::new(note.to_string(), centre, style);
    chart
        .draw_series(std::iter::once(text))
        .map_err(draw_error)?;
    Ok(())
}

/// Most points drawn for the CDF line; larger sample sets are drawn through evenly
/// spaced ranks, which looks the same at this size.
const CDF_POINTS_MAX: usize = 2_000;
/// Top of the CDF y axis, leaving room above 1.0 for the percentile tags.
const CDF_Y_TOP: f64 = 1.1;
/// Width of the CDF's y label area at most; wider cluster labels do not push it.
const CDF_AXIS_PX_MAX: u32 = 120;
/// `max / p50` from which the latency axis turns logarithmic, so a long tail (say,
/// samples caught in a partition) does not squash the body of the curve into one line.
const LOG_AXIS_SPREAD_MIN: f64 = 20.0;

type CdfChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<TickedAxis, RangedCoordf64>>;

/// A linear f64 axis whose ticks are chosen here. Plotters' own `WithKeyPoints` does
/// the same but leaves the axis without a label formatter, so no mesh can be drawn.
#[derive(Clone)]
struct TickedAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
}

/// Finite samples in ascending order.
fn sorted_samples(samples: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Nearest-rank percentile of a non-empty ascending slice, `fraction` in 0..=1.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Fraction of samples at or below `ms`.
fn cdf_at(sorted: &[f64], ms: f64) -> f64 {
    sorted.partition_point(|&v| v <= ms) as f64 / sorted.len().max(1) as f64
}

/// How latencies map onto the CDF's x axis: a chart position is either the latency
/// in milliseconds or its base-10 logarithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatencyAxis {
    Linear,
    Log,
}

impl LatencyAxis {
    fn for_samples(sorted: &[f64]) -> LatencyAxis {
        match (sorted.first(), sorted.last()) {
            (Some(&first), Some(&last))
                if first > 0.0 && last / percentile(sorted, 0.5) >= LOG_AXIS_SPREAD_MIN =>
            {
                LatencyAxis::Log
            }
            _ => LatencyAxis::Linear,
        }
    }

    fn position(self, ms: f64) -> f64 {
        match self {
            LatencyAxis::Linear => ms,
            LatencyAxis::Log => ms.log10(),
        }
    }

    fn latency_ms(self, position: f64) -> f64 {
        match self {
            LatencyAxis::Linear => position,
            LatencyAxis::Log => 10f64.powf(position),
        }
    }

    /// Chart positions from just below the smallest sample (or zero) to a little past
    /// the largest.
    fn range(self, sorted: &[f64]) -> (f64, f64) {
        let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
            return (0.0, 1.0);
        };
        let (lo, hi) = match self {
            LatencyAxis::Linear => (first.min(0.0), last),
            LatencyAxis::Log => (first.log10(), last.log10()),
        };
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let pad = (hi - lo) * 0.05;
        match self {
            LatencyAxis::Linear => (lo, hi + pad),
            LatencyAxis::Log => (lo - pad, hi + pad),
        }
    }

    /// Tick positions: multiples of a 1-2-5 step, or 1-2-5 times powers of ten.
    fn ticks(self, lo: f64, hi: f64) -> Vec<f64> {
        match self {
            LatencyAxis::Linear => {
                let step = nice_step((hi - lo) / 10.0);
                let first = (lo / step).ceil() as i64;
                (first..)
                    .map(|k| k as f64 * step)
                    .take_while(|&t| t <= hi + step * 1e-9)
                    .take(100)
                    .collect()
            }
            LatencyAxis::Log => {
                let mantissas: &[f64] = if hi - lo > 6.0 {
                    &[1.0]
                } else {
                    &[1.0, 2.0, 5.0]
                };
                (lo.floor() as i64..=hi.ceil() as i64)
                    .flat_map(|k| mantissas.iter().map(move |m| k as f64 + m.log10()))
                    .filter(|&t| (lo..=hi).contains(&t))
                    .collect()
            }
        }
    }

    fn tick_label(self, position: f64, lo: f64, hi: f64) -> String {
        match self {
            LatencyAxis::Linear => format_number(position, axis_decimals(hi - lo)),
            LatencyAxis::Log => {
                let ms = self.latency_ms(position);
                let decimals = if ms >= 1.0 {
                    0
                } else {
                    (-ms.log10()).ceil() as usize
                };
                format_number(ms, decimals.min(6))
            }
        }
    }

    fn description(self) -> &'static str {
        match self {
            LatencyAxis::Linear => "propagation latency (ms)",
            LatencyAxis::Log => "propagation latency (ms, log scale)",
        }
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = match raw / magnitude {
        m if m <= 1.0 => 1.0,
        m if m <= 2.0 => 2.0,
        m if m <= 5.0 => 5.0,
        _ => 10.0,
    };
    mantissa * magnitude
}

/// The empirical CDF as a step line in chart positions, from `(lo, 0)` to `(hi, 1)`.
fn cdf_points(sorted: &[f64], axis: LatencyAxis, lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let fraction = |rank: usize| rank as f64 / n as f64;
    let mut points = vec![(lo, 0.0)];
    if n <= CDF_POINTS_MAX {
        for (index, &ms) in sorted.iter().enumerate() {
            points.push((axis.position(ms), fraction(index)));
            points.push((axis.position(ms), fraction(index + 1)));
        }
    } else if let Some(&first) = sorted.first() {
        points.push((axis.position(first), 0.0));
        for step in 0..=CDF_POINTS_MAX {
            let index = step * (n - 1) / CDF_POINTS_MAX;
            points.push((axis.position(sorted[index]), fraction(index + 1)));
        }
    }
    points.push((hi, 1.0));
    points
}

fn cdf_caption(total: usize, finite: usize) -> String {
    match (total, total - finite) {
        (0, _) => "Propagation latency CDF (no samples)".to_string(),
        (n, 0) => format!("Propagation latency CDF (n = {n})"),
        (_, dropped) => format!(
            "Propagation latency CDF (n = {finite}; {} dropped)",
            count(dropped, "non-finite sample")
        ),
    }
}

fn draw_cdf(
    root: &Area<'_>,
    area: &Area<'_>,
    samples: &[f64],
    axis_px: u32,
) -> Result<(), PlotError> {
    let sorted = sorted_samples(samples);
    let axis = LatencyAxis::for_samples(&sorted);
    let (lo, hi) = axis.range(&sorted);
    let mut chart = ChartBuilder::on(area)
        .caption(
            cdf_caption(samples.len(), sorted.len()),
            font(18).style(FontStyle::Bold).color(&TEXT),
        )
        .margin_top(6)
        .margin_right(30)
        .margin_bottom(10)
        .x_label_area_size(42)
        .y_label_area_size(axis_px.min(CDF_AXIS_PX_MAX))
        .build_cartesian_2d(
            TickedAxis {
                inner: (lo..hi).into(),
                ticks: axis.ticks(lo, hi),
            },
            0.0..CDF_Y_TOP,
        )
        .map_err(draw_error)?;
    let x_format = |v: &f64| axis.tick_label(*v, lo, hi);
    let y_format = |v: &f64| {
        if *v > 1.0 + 1e-9 {
            String::new()
        } else {
            format!("{v:.1}")
        }
    };
    chart
        .configure_mesh()
        .y_labels(12)
        .max_light_lines(0)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .x_desc(axis.description())
        .y_desc("fraction of samples ≤ x")
        .bold_line_style(GRID)
        .axis_style(MUTED)
        .label_style(font(13).color(&TEXT))
        .axis_desc_style(font(14).color(&TEXT))
        .draw()
        .map_err(draw_error)?;
    if sorted.is_empty() {
        return draw_centred_note(&mut chart, "no samples");
    }
    let points = cdf_points(&sorted, axis, lo, hi);
    let area_fill = AreaSeries::new(points.iter().copied(), 0.0, CDF_LINE.mix(0.12));
    chart.draw_series(area_fill).map_err(draw_error)?;
    let line = LineSeries::new(points, CDF_LINE.stroke_width(2));
    chart.draw_series(line).map_err(draw_error)?;
    draw_percentile_marks(&mut chart, &sorted, axis)?;
    draw_cdf_stats(root, &chart, &sorted, axis)
}

fn draw_percentile_marks(
    chart: &mut CdfChart<'_, '_>,
    sorted: &[f64],
    axis: LatencyAxis,
) -> Result<(), PlotError> {
    let left_px = chart.backend_coord(&(chart.x_range().start, 0.0)).0;
    for (name, fraction, colour) in [("p50", 0.5, P50), ("p99", 0.99, P99)] {
        let ms = percentile(sorted, fraction);
        let x = axis.position(ms);
        let dashes = DashedLineSeries::new([(x, 0.0), (x, 1.0)], 6, 4, colour.stroke_width(2));
        chart.draw_series(dashes).map_err(draw_error)?;
        let dot = Circle::new((x, cdf_at(sorted, ms)), 5, colour.filled());
        chart
            .draw_series(std::iter::once(dot))
            .map_err(draw_error)?;
        // p50's tag sits left of its line and p99's right, so close values never collide.
        let near_axis = chart.backend_coord(&(x, 0.0)).0 - left_px < 40;
        let (dx, h_pos) = if name == "p99" || near_axis {
            (5, HPos::Left)
        } else {
            (-5, HPos::Right)
        };
        let style = font(13)
            .style(FontStyle::Bold)
            .color(&colour)
            .pos(Pos::new(h_pos, VPos::Bottom));
        let tag = EmptyElement::at((x, 1.0)) + Text::new(name, (dx, -4), style);
        chart
            .draw_series(std::iter::once(tag))
            .map_err(draw_error)?;
    }
    Ok(())
}

const STATS_FONT_PX: u32 = 13;
const STATS_LINE_PX: i32 = 18;
const STATS_PAD_PX: i32 = 12;

fn format_ms(value: f64) -> String {
    let decimals = match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    format_number(value, decimals)
}

/// A box with the exact percentiles, placed where it hides no part of the curve.
fn draw_cdf_stats(
    root: &Area<'_>,
    chart: &CdfChart<'_, '_>,
    sorted: &[f64],
    axis: LatencyAxis,
) -> Result<(), PlotError> {
    let max = sorted.last().copied().unwrap_or(0.0);
    let lines = [
        (
            format!("p50 = {} ms", format_ms(percentile(sorted, 0.5))),
            P50,
        ),
        (
            format!("p99 = {} ms", format_ms(percentile(sorted, 0.99))),
            P99,
        ),
        (format!("max = {} ms", format_ms(max)), TEXT),
        (format!("n = {}", sorted.len()), TEXT),
    ];
    let chars = lines
        .iter()
        .map(|(text, _)| text.chars().count())
        .max()
        .unwrap_or(0);
    let width = text_width_px(chars, STATS_FONT_PX) as i32 + 20;
    let height = STATS_LINE_PX * lines.len() as i32 + 12;
    let (x0, y0) = stats_box_origin(chart, sorted, axis, (width, height));
    let corners = [(x0, y0), (x0 + width, y0 + height)];
    root.draw(&Rectangle::new(corners, WHITE.mix(0.92).filled()))
        .map_err(draw_error)?;
    root.draw(&Rectangle::new(corners, MUTED.mix(0.6).stroke_width(1)))
        .map_err(draw_error)?;
    for (index, (text, colour)) in lines.iter().enumerate() {
        let y = y0 + 6 + STATS_LINE_PX * index as i32 + STATS_LINE_PX / 2;
        let style = font(STATS_FONT_PX)
            .color(colour)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(text.clone(), (x0 + 10, y), style))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Top-left pixel of a `size` box inside the plot that crosses neither the CDF line
/// nor a percentile mark: the rightmost free place along the bottom, else the leftmost
/// along the top, else the bottom right corner.
fn stats_box_origin(
    chart: &CdfChart<'_, '_>,
    sorted: &[f64],
    axis: LatencyAxis,
    size: (i32, i32),
) -> (i32, i32) {
    const STEP_PX: usize = 20;
    const CLEARANCE_PX: i32 = 4;
    let x_range = chart.x_range();
    let (left, bottom) = chart.backend_coord(&(x_range.start, 0.0));
    let (right, top) = chart.backend_coord(&(x_range.end, 1.0));
    let marks = [0.5, 0.99].map(|p| {
        let x = axis.position(percentile(sorted, p));
        chart.backend_coord(&(x, 0.0)).0
    });
    let ms_at = |px: i32| {
        let share = f64::from(px - left) / f64::from((right - left).max(1));
        axis.latency_ms(x_range.start + share * (x_range.end - x_range.start))
    };
    let fraction_at = |py: i32| f64::from(bottom - py) / f64::from((bottom - top).max(1));
    let free = |&(x, y): &(i32, i32)| {
        let (x0, y0) = (x - CLEARANCE_PX, y - CLEARANCE_PX);
        let (x1, y1) = (x + size.0 + CLEARANCE_PX, y + size.1 + CLEARANCE_PX);
        let hits_mark = marks.iter().any(|&m| (x0..=x1).contains(&m));
        // The CDF rises, so it crosses the box iff it reaches the box's bottom by the
        // right edge and is still below the box's top at the left edge.
        let hits_line = cdf_at(sorted, ms_at(x1)) >= fraction_at(y1)
            && cdf_at(sorted, ms_at(x0)) <= fraction_at(y0);
        !hits_mark && !hits_line
    };
    let xs = (left + STATS_PAD_PX)..=(right - STATS_PAD_PX - size.0);
    let bottom_y = bottom - STATS_PAD_PX - size.1;
    let top_y = top + STATS_PAD_PX;
    let along_bottom = xs.clone().rev().step_by(STEP_PX).map(|x| (x, bottom_y));
    let along_top = xs.step_by(STEP_PX).map(|x| (x, top_y));
    along_bottom
        .chain(along_top)
        .find(free)
        .unwrap_or((right - STATS_PAD_PX - size.0, bottom_y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start_ms: u64, end_ms: u64, label: &str) -> Span {
        Span {
            start_ms,
            end_ms,
            label: label.to_string(),
        }
    }

    /// Latencies between 40 and 100 ms with a tail to 700 ms, spread without an RNG.
    fn samples(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let u = (i * 7919 % n) as f64 / n as f64;
                40.0 + 60.0 * u + if u > 0.9 { 6_000.0 * (u - 0.9) } else { 0.0 }
            })
            .collect()
    }

    fn sample_timeline() -> Timeline {
        Timeline {
            title: "seed 42: partition and crash".to_string(),
            clusters: vec!["eu-west".into(), "us-east".into(), "ap-south".into()],
            duration_ms: 60_000,
            partitions: vec![(span(10_000, 25_000, "eu-west | rest"), vec![0])],
            crashes: vec![(1, span(30_000, 38_500, "replica r1 down"))],
            import_changes: vec![(0, 2_000), (1, 2_300), (2, 2_400), (1, 26_000), (0, 27_500)],
            propagation_ms: samples(200),
        }
    }

    fn temp_svg(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("shoal-plot-{}-{name}.svg", std::process::id()))
    }

    /// Renders `timeline` to a temporary file and returns the SVG text.
    fn render(name: &str, timeline: &Timeline) -> String {
        let path = temp_svg(name);
        write_svg(&path, timeline).expect("timeline renders");
        let svg = std::fs::read_to_string(&path).expect("rendered file is readable");
        std::fs::remove_file(&path).expect("rendered file is removable");
        svg
    }

    #[test]
    fn sample_timeline_shows_rows_legend_and_percentiles() {
        let svg = render("sample", &sample_timeline());
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        let words = [
            "seed 42: partition and crash",
            "eu-west",
            "us-east",
            "ap-south",
            "partition: eu-west | rest",
            "crash / down",
            "import change",
            "replica r1 down",
            "time (s)",
            "Propagation latency CDF (n = 200)",
            "p50 = ",
            "p99 = ",
        ];
        for word in words {
            assert!(svg.contains(word), "missing {word:?}");
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(
            render("twice-a", &sample_timeline()),
            render("twice-b", &sample_timeline())
        );
    }

    #[test]
    fn no_samples_are_said_so() {
        let timeline = Timeline {
            propagation_ms: vec![f64::NAN],
            ..sample_timeline()
        };
        let svg = render("no-samples", &timeline);
        assert!(svg.contains("no samples"));
        assert!(!svg.contains("p50 = "));
    }

    #[test]
    fn empty_timeline_renders() {
        let svg = render("empty", &Timeline::default());
        assert!(svg.contains("no clusters"));
        assert!(svg.contains("no samples"));
    }

    #[test]
    fn rows_past_the_cap_are_cut_and_the_title_says_so() {
        let timeline = Timeline {
            title: "big".into(),
            clusters: (0..ROWS_MAX + 50).map(|i| format!("cluster-{i}")).collect(),
            duration_ms: 10_000,
            crashes: vec![(ROWS_MAX + 10, span(1_000, 2_000, "hidden crash"))],
            ..Timeline::default()
        };
        let svg = render("big", &timeline);
        assert!(svg.contains("big (showing first 200 of 250 clusters)"));
        assert!(svg.contains(&format!("cluster-{}\n", ROWS_MAX - 1)));
        assert!(!svg.contains(&format!("cluster-{}\n", ROWS_MAX)));
    }

    #[test]
    fn a_row_outside_the_clusters_is_refused_and_nothing_written() {
        let mut timeline = sample_timeline();
        timeline.import_changes.push((3, 1_000));
        let path = temp_svg("refused");
        let error = write_svg(&path, &timeline).expect_err("row 3 of 3 clusters");
        assert!(
            matches!(
                error,
                PlotError::RowOutOfRange {
                    row: 3,
                    rows: 3,
                    ..
                }
            ),
            "{error}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn an_unwritable_path_is_an_io_error() {
        let path = std::env::temp_dir()
            .join(format!("shoal-plot-{}-missing-dir", std::process::id()))
            .join("out.svg");
        let error = write_svg(&path, &sample_timeline()).expect_err("parent does not exist");
        assert!(matches!(error, PlotError::Io { .. }), "{error}");
        assert!(error.to_string().contains("missing-dir"));
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn listed_rows_become_sorted_runs() {
        assert_eq!(row_runs(&[4, 0, 2, 3, 3], 5), vec![(0, 0), (2, 4)]);
        assert_eq!(row_runs(&[], 3), vec![(0, 2)]);
        assert_eq!(row_runs(&[1, 250], 3), vec![(1, 1)]);
    }

    #[test]
    fn a_long_tail_switches_the_latency_axis_to_log() {
        assert_eq!(
            LatencyAxis::for_samples(&sorted_samples(&samples(200))),
            LatencyAxis::Linear
        );
        let tail = [2.0, 3.0, 4.0, 5.0, 4_000.0];
        assert_eq!(LatencyAxis::for_samples(&tail), LatencyAxis::Log);
        assert_eq!(
            LatencyAxis::for_samples(&[0.0, 1.0, 500.0]),
            LatencyAxis::Linear
        );
    }
}
