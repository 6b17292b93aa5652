//! The occupancy-versus-abandon-rate plot the issue asks for: a hand-written SVG scatter, one
//! labelled point per policy with its 95 % intervals as whiskers. Written by hand so the crate
//! needs no plotting dependency; the trade-off §4.4's acceptance criteria are stated in
//! (occupancy gained for abandon rate spent) reads directly off it.

use std::fmt::Write;

use super::report::SimReport;

const W: f64 = 720.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// XML-escapes text (policy names come from the command line).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" axis maximum (1, 2, 2.5, 5 × 10^k) at or above `v`.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * e >= v {
            return m * e;
        }
    }
    10.0 * e
}

/// x: overall abandon rate (%), y: occupancy (%).
pub fn svg(report: &SimReport) -> String {
    let pts: Vec<(String, f64, f64, f64, f64)> = report
        .policies
        .iter()
        .map(|p| {
            (
                p.policy.clone(),
                p.abandon_rate.mean * 100.0,
                p.abandon_rate.ci95 * 100.0,
                p.occupancy.mean * 100.0,
                p.occupancy.ci95 * 100.0,
            )
        })
        .collect();
    let xmax = nice_max(pts.iter().map(|p| p.1 + p.2).fold(3.0, f64::max).max(0.5) * 1.1);
    let ymax = 100.0;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x.clamp(0.0, xmax) / xmax) * pw;
    let sy = |y: f64| TOP + ph - (y.clamp(0.0, ymax) / ymax) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}: occupancy vs abandon rate (mean ± 95 % CI, {} replications)</text>"#,
        W / 2.0,
        esc(&report.scenario),
        report.replications
    );
    // Grid and ticks.
    for i in 0..=5 {
        let xv = xmax * i as f64 / 5.0;
        let x = sx(xv);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{xv:.1}</text>"##,
            TOP + ph,
            TOP + ph + 16.0
        );
        let yv = ymax * i as f64 / 5.0;
        let y = sy(yv);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{yv:.0}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">abandon rate, % of live answers</text>"#,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">agent occupancy, %</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // The 3 % regulatory line (§3.1 / §4.4 α).
    if 3.0 <= xmax {
        let x = sx(3.0);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#c00" stroke-dasharray="4 3"/>"##,
            TOP + ph
        );
    }
    for (name, x, xci, y, yci) in &pts {
        let (cx, cy) = (sx(*x), sy(*y));
        let _ = writeln!(
            s,
            r##"<g class="policy"><line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="#36c"/><line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#36c"/><circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="#36c"/><text x="{:.1}" y="{:.1}">{}</text></g>"##,
            sx(x - xci),
            sx(x + xci),
            sy(y - yci),
            sy(y + yci),
            cx + 6.0,
            cy - 6.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nice() {
        assert_eq!(esc("a<b&\"c"), "a&lt;b&amp;&quot;c");
        assert_eq!(nice_max(3.3), 5.0);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }
}
