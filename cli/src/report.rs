//! Run records for people: a fixed-width table, and JSON for tools.

use std::fmt::Write as _;

use qcvr::run::RunRecord;

/// Renders run records as a table, one row per integration run.
pub fn runs_table(runs: &[RunRecord]) -> String {
    let header = [
        "integration",
        "state",
        "started",
        "ended",
        "window",
        "fetched",
        "new",
        "updated",
        "unchanged",
        "failed",
        "findings new/upd/same",
        "error",
    ];
    let rows: Vec<[String; 12]> = runs.iter().map(row).collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    out
}

fn row(run: &RunRecord) -> [String; 12] {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let window = run
        .window
        .map(|w| {
            format!(
                "{} .. {}",
                w.since.format("%m-%d %H:%M:%S"),
                w.until.format("%m-%d %H:%M:%S")
            )
        })
        .unwrap_or_else(|| "-".into());
    let findings = run
        .findings
        .map(|f| format!("{}/{}/{}", f.new, f.updated, f.unchanged))
        .unwrap_or_else(|| "-".into());
    let error = run.error.clone().unwrap_or_default();
    [
        run.integration.to_string(),
        serde_json::to_value(run.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        time(Some(run.started_at)),
        time(run.ended_at),
        window,
        run.counts.fetched.to_string(),
        run.counts.new.to_string(),
        run.counts.updated.to_string(),
        run.counts.unchanged.to_string(),
        run.counts.failed.to_string(),
        findings,
        error,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use qcvr::config::Integration;
    use qcvr::run::{Counts, RunState, Trigger};

    #[test]
    fn table_lists_each_run_with_its_counts() {
        let start = chrono::Utc
            .with_ymd_and_hms(2026, 12, 3, 10, 0, 0)
            .single()
            .expect("valid date");
        let mut run = RunRecord::start("demo-1", Integration::Images, Trigger::Chained, start);
        run.state = RunState::Succeeded;
        run.counts = Counts {
            fetched: 12,
            new: 10,
            updated: 1,
            unchanged: 1,
            failed: 0,
        };
        run.findings = Some(Counts {
            fetched: 40,
            new: 30,
            updated: 4,
            unchanged: 6,
            failed: 0,
        });

        let table = runs_table(&[run]);

        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("integration"));
        assert!(lines[0].contains("findings new/upd/same"));
        assert!(lines[1].contains("30/4/6"));
        assert!(lines[1].contains("images") && lines[1].contains("succeeded"));
        assert!(lines[1].contains("12") && lines[1].contains("10"));
    }
}
