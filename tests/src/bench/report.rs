//! Medians, the printed table, the Markdown for docs/benchmarks.md and the SVG plot.

use std::fmt::Write as _;

use crate::failover::{Sample, Series};
use crate::systems::Kind;

/// Median, min, max and count of the observed values.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

fn col(s: &Series, f: impl Fn(&Sample) -> Option<f64>) -> Option<Stat> {
    stat(s.samples.iter().filter_map(f))
}

fn secs(st: Option<Stat>) -> String {
    match st {
        Some(s) => format!("{:.2} s ({:.2}–{:.2})", s.median, s.min, s.max),
        None => "–".into(),
    }
}

fn lost(s: &Series) -> String {
    let l: Vec<usize> = s.samples.iter().filter_map(|x| x.lost).collect();
    if l.is_empty() {
        return "–".into();
    }
    let acked: usize = s.samples.iter().map(|x| x.acked).sum();
    let total: usize = l.iter().sum();
    let st = stat(l.iter().map(|x| *x as f64)).expect("non-empty");
    format!(
        "{:.0} ({:.0}–{:.0}); {total} of {acked}",
        st.median, st.min, st.max
    )
}

/// Through PgBouncer: the time, then client errors and lost rows, each as a median
/// (min–max) with the total.
fn bouncer(s: &Series) -> String {
    if s.profile.kind != crate::systems::Kind::Pgha {
        return "– (no PgBouncer integration)".into();
    }
    let errs: Vec<usize> = s
        .samples
        .iter()
        .filter_map(|x| x.pgbouncer_errors)
        .collect();
    let Some(e) = stat(errs.iter().map(|x| *x as f64)) else {
        return "–".into();
    };
    let lost: Vec<usize> = s.samples.iter().filter_map(|x| x.pgbouncer_lost).collect();
    let acked: usize = s.samples.iter().map(|x| x.pgbouncer_acked).sum();
    format!(
        "{}; errors {:.0} ({:.0}–{:.0}), {} in all; lost {} of {acked}",
        secs(col(s, |x| x.pgbouncer)),
        e.median,
        e.min,
        e.max,
        errs.iter().sum::<usize>(),
        lost.iter().sum::<usize>(),
    )
}

fn failed_over(s: &Series) -> String {
    let done = s.samples.iter().filter(|x| x.first_write.is_some()).count();
    format!("{done}/{}", s.samples.len())
}

/// The failover table in Markdown.
pub fn failover_table(series: &[Series]) -> String {
    let mut t = String::from(
        "| configuration | fault | failovers | detection (fault → decision) | promotion (decision → not in recovery) | first acknowledged write (fault →, 50 ms retries) | through HAProxy (fault → first ack on the new master) | acknowledged writes lost: median (min–max); total of acked | through PgBouncer (fault → first ack on the new master; client errors; acked writes lost) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in series {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.profile.label,
            s.fault.name(),
            failed_over(s),
            secs(col(s, |x| x.detection)),
            secs(col(s, |x| x.promotion)),
            secs(col(s, |x| x.first_write)),
            secs(col(s, |x| x.haproxy)),
            lost(s),
            bouncer(s),
        );
    }
    t
}

/// Ratios of Patroni's first acknowledged write to pgha's, run i against run i.
pub fn ratio_table(series: &[Series]) -> String {
    let find = |label: &str, fault| {
        series
            .iter()
            .find(|s| s.profile.label == label && s.fault == fault)
    };
    let mut t = String::from(
        "| pair | fault | pairs | Patroni ÷ pgha, first acknowledged write: median (min–max) | ratio of the medians |\n|---|---|---|---|---|\n",
    );
    let mut any = false;
    for (p, q) in [
        ("pgha fast", "Patroni minimums"),
        ("pgha defaults", "Patroni defaults"),
    ] {
        for fault in series
            .iter()
            .map(|s| s.fault)
            .collect::<Vec<_>>()
            .iter()
            .take(2)
        {
            let (Some(a), Some(b)) = (find(p, *fault), find(q, *fault)) else {
                continue;
            };
            let ratios: Vec<f64> = a
                .samples
                .iter()
                .zip(&b.samples)
                .filter_map(|(x, y)| Some(y.first_write? / x.first_write?))
                .collect();
            let of_medians = match (col(a, |x| x.first_write), col(b, |x| x.first_write)) {
                (Some(x), Some(y)) => format!("{:.1}×", y.median / x.median),
                _ => "–".into(),
            };
            let r = stat(ratios.iter().copied());
            let _ = writeln!(
                t,
                "| {q} vs {p} | {} | {} | {} | {of_medians} |",
                fault.name(),
                ratios.len(),
                r.map(|r| format!("{:.1}× ({:.1}–{:.1})", r.median, r.min, r.max))
                    .unwrap_or("– (no failover on one side)".into()),
            );
            any = true;
        }
    }
    if any { t } else { String::new() }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar per configuration and fault: detection, promotion and the rest of the
/// way to the first acknowledged write (medians), with HAProxy's first ack as a tick; one
/// panel on the scale of every run, one zoomed on pgha.
pub fn svg(series: &[Series], title: &str) -> String {
    let shown: Vec<&Series> = series.iter().filter(|s| !s.samples.is_empty()).collect();
    let pgha: Vec<&Series> = shown
        .iter()
        .copied()
        .filter(|s| s.profile.kind == Kind::Pgha)
        .collect();
    let (w, left, right) = (960.0, 230.0, 90.0);
    let row_h = 26.0;
    let mut panels: Vec<(&str, Vec<&Series>)> = vec![("every configuration", shown.clone())];
    if pgha.len() < shown.len() && !pgha.is_empty() {
        panels.push(("pgha only, zoomed", pgha));
    }
    let mut body = String::new();
    let mut y = 72.0;
    for (name, rows) in &panels {
        let max = rows
            .iter()
            .filter_map(|s| {
                let a = col(s, |x| x.first_write).map(|x| x.median);
                let b = col(s, |x| x.haproxy).map(|x| x.median);
                a.into_iter().chain(b).reduce(f64::max)
            })
            .fold(0.0_f64, f64::max)
            .max(0.1);
        let step = nice_step(max);
        let scale_max = (max / step).ceil() * step;
        let sx = |v: f64| left + (w - left - right) * v / scale_max;
        let _ = writeln!(
            body,
            r#"<text x="{left}" y="{y}" font-weight="bold">{}</text>"#,
            xml(name)
        );
        y += 12.0;
        let top = y;
        let bottom = y + row_h * rows.len() as f64;
        let mut tick = 0.0;
        while tick <= scale_max + 1e-9 {
            let x = sx(tick);
            let _ = writeln!(
                body,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{:.0}" text-anchor="middle" font-size="11">{} s</text>"##,
                bottom + 14.0,
                trim(tick)
            );
            tick += step;
        }
        for s in rows {
            let det = col(s, |x| x.detection).map(|x| x.median);
            let prom = col(s, |x| x.promotion).map(|x| x.median.max(0.0));
            let first = col(s, |x| x.first_write).map(|x| x.median);
            let proxy = col(s, |x| x.haproxy).map(|x| x.median);
            let (by, bh) = (y + 4.0, row_h - 8.0);
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="end" font-size="12">{} — {}</text>"#,
                left - 8.0,
                y + row_h / 2.0 + 4.0,
                xml(s.profile.label),
                s.fault.name()
            );
            let mut at = 0.0;
            for (len, color) in [(det, "#4e79a7"), (prom, "#f28e2b")] {
                if let Some(l) = len {
                    let _ = writeln!(
                        body,
                        r#"<rect x="{:.1}" y="{by}" width="{:.1}" height="{bh}" fill="{color}"/>"#,
                        sx(at),
                        (sx(at + l) - sx(at)).max(0.5)
                    );
                    at += l;
                }
            }
            if let Some(f) = first {
                if f > at {
                    let _ = writeln!(
                        body,
                        r##"<rect x="{:.1}" y="{by}" width="{:.1}" height="{bh}" fill="#59a14f"/>"##,
                        sx(at),
                        (sx(f) - sx(at)).max(0.5)
                    );
                }
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.0}" font-size="11">{f:.2} s</text>"#,
                    sx(f.max(at).max(proxy.unwrap_or(0.0))) + 6.0,
                    y + row_h / 2.0 + 4.0
                );
            } else {
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.0}" font-size="11">no failover</text>"#,
                    left + 4.0,
                    y + row_h / 2.0 + 4.0
                );
            }
            if let Some(p) = proxy {
                let _ = writeln!(
                    body,
                    r#"<line x1="{x:.1}" y1="{:.0}" x2="{x:.1}" y2="{:.0}" stroke="black" stroke-width="2"/>"#,
                    by - 2.0,
                    by + bh + 2.0,
                    x = sx(p)
                );
            }
            y += row_h;
        }
        y += 40.0;
    }
    let legend_y = y - 10.0;
    let mut legend = String::new();
    let mut lx = left;
    for (color, name) in [
        ("#4e79a7", "detection (fault → decision)"),
        ("#f28e2b", "promotion (decision → not in recovery)"),
        ("#59a14f", "until the first acknowledged write"),
    ] {
        let _ = write!(
            legend,
            r#"<rect x="{lx}" y="{:.0}" width="12" height="12" fill="{color}"/><text x="{}" y="{legend_y}" font-size="12">{name}</text>"#,
            legend_y - 10.0,
            lx + 16.0
        );
        lx += 16.0 + 6.3 * name.chars().count() as f64 + 14.0;
    }
    let ly = legend_y + 20.0;
    let _ = write!(
        legend,
        r#"<line x1="{left}" y1="{:.0}" x2="{left}" y2="{ly}" stroke="black" stroke-width="2"/><text x="{}" y="{ly}" font-size="12">first acknowledged write through HAProxy's write port (a client writing every 10 ms)</text>"#,
        ly - 12.0,
        left + 6.0
    );
    let h = y + 30.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"28\" font-size=\"15\" font-weight=\"bold\">{}</text>\n<text x=\"{left}\" y=\"46\" font-size=\"11\">medians, seconds from the fault</text>\n{body}{legend}\n</svg>\n",
        xml(title)
    )
}

fn nice_step(max: f64) -> f64 {
    let raw = max / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in `doc`
/// (appending the block when it is not there yet).
pub fn splice(doc: &str, name: &str, content: &str) -> String {
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let block = format!("{open}\n{}\n{close}", content.trim_end());
    match (doc.find(&open), doc.find(&close)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &doc[..a], &doc[b + close.len()..]),
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use crate::failover::{Sample, Series};
    use crate::systems::{Fault, profiles};

    #[test]
    fn svg_has_a_bar_per_series() {
        let series: Vec<Series> = profiles()
            .into_iter()
            .zip([2.5, 0.6, 30.0, 20.0])
            .flat_map(|(p, d)| {
                [Fault::Kill, Fault::Hang].map(|fault| Series {
                    profile: p.clone(),
                    fault,
                    samples: vec![Sample {
                        detection: Some(d),
                        promotion: Some(0.1),
                        first_write: (fault == Fault::Kill || d < 10.0).then_some(d + 0.15),
                        haproxy: Some(d + 0.5),
                        lost: Some(0),
                        acked: 100,
                        ..Sample::default()
                    }],
                    notes: vec![],
                })
            })
            .collect();
        let svg = super::svg(&series, "t");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("no failover").count(), 2);
        if let Some(out) = std::env::var_os("BENCH_SVG_OUT") {
            std::fs::write(out, &svg).unwrap();
        }
    }

    #[test]
    fn medians_and_splice() {
        let s = super::stat([3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        let d = super::splice("a", "x", "one");
        assert_eq!(d, "a\n\n<!-- bench:x -->\none\n<!-- /bench:x -->\n");
        assert_eq!(
            super::splice(&d, "x", "two"),
            "a\n\n<!-- bench:x -->\ntwo\n<!-- /bench:x -->\n"
        );
    }
}
