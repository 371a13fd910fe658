//! The report as a picture: one SVG with four panels (line over time, admissions per
//! second, wait distribution, ETA shown against wait lived). Written by hand: a plotting
//! crate would bring font handling (and system libraries) for a few lines and labels.

use crate::report::Report;
use std::fmt::Write as _;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 45.0;

#[derive(Clone, Copy)]
enum Mark {
    Line,
    Dashed,
    Bars,
    Dots,
}

/// One series of a panel.
pub struct Series {
    name: String,
    color: &'static str,
    mark: Mark,
    points: Vec<(f64, f64)>,
}

impl Series {
    pub fn line(name: &str, color: &'static str, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.to_string(), color, mark: Mark::Line, points }
    }

    pub fn dashed(name: &str, color: &'static str, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.to_string(), color, mark: Mark::Dashed, points }
    }
}

/// Colours told apart in print and by most colour-blind readers (Tableau's first four).
pub const PALETTE: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"];

/// One panel: a titled chart with a shared x axis from 0.
pub struct Panel {
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    series: Vec<Series>,
}

impl Panel {
    pub fn new(title: &str, x_label: &'static str, y_label: &'static str, series: Vec<Series>) -> Self {
        Panel { title: title.to_string(), x_label, y_label, series }
    }
}

/// A step of 1, 2 or 5 × 10^k giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(magnitude * 10.0);
    step.max(f64::MIN_POSITIVE)
}

fn number(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Panel {
    fn draw(&self, out: &mut String, top: f64) {
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (x_max, y_max) = all.fold((0.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
        let (x_step, y_step) = (tick_step(x_max), tick_step(y_max));
        let x_top = (x_max / x_step).ceil().max(1.0) * x_step;
        let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
        let (left, right) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT);
        let (upper, lower) = (top + MARGIN_TOP, top + PANEL_HEIGHT - MARGIN_BOTTOM);
        let sx = |x: f64| left + (right - left) * x / x_top;
        let sy = |y: f64| lower - (lower - upper) * y / y_top;

        let _ = writeln!(
            out,
            r#"<text x="{left}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
            top + 22.0,
            escape(&self.title)
        );
        let mut x = 0.0;
        while x <= x_top + 1e-9 {
            let px = sx(x);
            let _ = writeln!(out, r##"<line x1="{px:.1}" y1="{upper}" x2="{px:.1}" y2="{lower}" stroke="#eee"/>"##);
            let _ = writeln!(
                out,
                r#"<text x="{px:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
                lower + 15.0,
                number(x)
            );
            x += x_step;
        }
        let mut y = 0.0;
        while y <= y_top + 1e-9 {
            let py = sy(y);
            let _ = writeln!(out, r##"<line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#eee"/>"##);
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
                left - 6.0,
                py + 4.0,
                number(y)
            );
            y += y_step;
        }
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{upper}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            right - left,
            lower - upper
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            lower + 32.0,
            self.x_label
        );
        let _ = writeln!(
            out,
            r#"<text transform="translate({},{}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
            left - 50.0,
            (upper + lower) / 2.0,
            self.y_label
        );

        for (i, s) in self.series.iter().enumerate() {
            match s.mark {
                Mark::Line | Mark::Dashed => {
                    let path: Vec<String> = s.points.iter().map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1))).collect();
                    let dash = if matches!(s.mark, Mark::Dashed) { r#" stroke-dasharray="6 4""# } else { "" };
                    let _ = writeln!(
                        out,
                        r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
                        s.color,
                        path.join(" ")
                    );
                }
                Mark::Bars => {
                    let width = if s.points.len() > 1 { (sx(s.points[1].0) - sx(s.points[0].0)).abs() } else { 10.0 };
                    for p in &s.points {
                        let _ = writeln!(
                            out,
                            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.7"/>"#,
                            sx(p.0),
                            sy(p.1),
                            (width - 1.0).max(1.0),
                            (lower - sy(p.1)).max(0.0),
                            s.color
                        );
                    }
                }
                Mark::Dots => {
                    for p in &s.points {
                        let _ = writeln!(
                            out,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{}" fill-opacity="0.5"/>"#,
                            sx(p.0),
                            sy(p.1),
                            s.color
                        );
                    }
                }
            }
            let ly = upper + 14.0 + 16.0 * i as f64;
            let _ = writeln!(
                out,
                r#"<rect x="{}" y="{}" width="12" height="4" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
                right - 230.0,
                ly - 4.0,
                s.color,
                right - 212.0,
                ly,
                escape(&s.name)
            );
        }
    }
}

/// The report's plot as an SVG document.
pub fn svg(report: &Report) -> String {
    let mut panels = Vec::new();

    let mut line = vec![Series {
        name: "waiting (visitors' view)".into(),
        color: "#1f77b4",
        mark: Mark::Line,
        points: report.timeline.iter().map(|s| (s.t as f64, s.waiting as f64)).collect(),
    }];
    if !report.server.is_empty() {
        line.push(Series {
            name: "usher_waiting".into(),
            color: "#ff7f0e",
            mark: Mark::Dashed,
            points: report.server.iter().map(|s| (s.t, s.waiting)).collect(),
        });
    }
    panels.push(Panel {
        title: "Waiting in line".into(),
        x_label: "seconds into the run",
        y_label: "visitors",
        series: line,
    });

    let mut admissions = vec![
        Series {
            name: "admitted from the line (seen)".into(),
            color: "#1f77b4",
            mark: Mark::Line,
            points: report.timeline.iter().map(|s| (s.t as f64, s.admitted_from_line as f64)).collect(),
        },
        Series {
            name: "admitted at once".into(),
            color: "#2ca02c",
            mark: Mark::Line,
            points: report.timeline.iter().map(|s| (s.t as f64, s.admitted_direct as f64)).collect(),
        },
    ];
    if report.server.len() > 1 {
        admissions.push(Series {
            name: "granted by usher".into(),
            color: "#ff7f0e",
            mark: Mark::Dashed,
            points: report
                .server
                .windows(2)
                .filter(|w| w[1].t > w[0].t)
                .map(|w| (w[1].t, (w[1].granted - w[0].granted) / (w[1].t - w[0].t)))
                .collect(),
        });
    }
    if let Some(configured) = report.outflow.configured_per_minute {
        let end = report.duration_s.max(1.0);
        admissions.push(Series {
            name: "configured outflow".into(),
            color: "#7f7f7f",
            mark: Mark::Dashed,
            points: vec![(0.0, configured / 60.0), (end, configured / 60.0)],
        });
    }
    panels.push(Panel {
        title: "Admissions per second".into(),
        x_label: "seconds into the run",
        y_label: "per second",
        series: admissions,
    });

    panels.push(Panel {
        title: format!(
            "Wait from join to admission (p50 {:.1} s, p99 {:.1} s)",
            report.waits.seconds.p50, report.waits.seconds.p99
        ),
        x_label: "seconds waited",
        y_label: "visitors",
        series: vec![Series {
            name: "visitors".into(),
            color: "#1f77b4",
            mark: Mark::Bars,
            points: report.waits.histogram.iter().map(|b| (b.from, b.count as f64)).collect(),
        }],
    });

    let diagonal = report.eta.points.iter().fold(0.0f64, |m, p| m.max(p.0).max(p.1));
    panels.push(Panel {
        title: format!(
            "ETA shown at join against the wait (Kendall tau {:.4}, overtakes {})",
            report.fairness.kendall_tau, report.fairness.overtakes
        ),
        x_label: "ETA shown at join, seconds",
        y_label: "seconds waited",
        series: vec![
            Series { name: "visitors".into(), color: "#1f77b4", mark: Mark::Dots, points: report.eta.points.clone() },
            Series {
                name: "wait = ETA".into(),
                color: "#7f7f7f",
                mark: Mark::Dashed,
                points: vec![(0.0, 0.0), (diagonal, diagonal)],
            },
        ],
    });

    document(&report.description, panels)
}

/// Panels stacked under a title line, as one SVG document.
pub fn document(title: &str, panels: Vec<Panel>) -> String {
    let height = PANEL_HEIGHT * panels.len() as f64 + 30.0;
    let mut out = String::with_capacity(64 * 1024);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="20" font-size="14">{}</text>"#, escape(title));
    for (i, panel) in panels.iter().enumerate() {
        panel.draw(&mut out, 30.0 + PANEL_HEIGHT * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(0.0), 1.0);
        assert_eq!(number(20_000.0), "20k");
        assert_eq!(number(2.5), "2.5");
    }
}
