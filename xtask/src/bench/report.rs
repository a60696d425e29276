//! bench/results.md and bench/results.json: one table per case, the machine
//! and the date.
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::cmd::output;

/// One case's table: a row per contender.
pub struct Table {
    /// Heading, e.g. "L4, 1,000 services".
    pub title: String,
    /// Column headings; the first names the contender.
    pub columns: Vec<String>,
    /// Cells, already formatted.
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

/// One suite (L4, L7, config): prose, tables and the raw figures.
pub struct Section {
    pub title: String,
    /// Paragraphs before the tables (method, what each contender is).
    pub intro: Vec<String>,
    pub tables: Vec<Table>,
    /// Every run's figures, for results.json.
    pub json: Value,
}

/// The machine the figures come from.
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory: String,
    pub date: String,
}

impl Machine {
    /// Reads /proc/cpuinfo, /proc/meminfo, `uname -r` and `date -u`.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .map(|v| {
                        let kib: f64 = v
                            .trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse()
                            .unwrap_or(0.0);
                        format!("{:.0} GiB", kib / 1024.0 / 1024.0)
                    })
            })
            .unwrap_or_else(|| "unknown".into());
        let trim = |s: Option<String>| s.map(|s| s.trim().to_string()).unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel: trim(output(Command::new("uname").arg("-r"))),
            memory,
            date: trim(output(
                Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]),
            )),
        }
    }
}

/// One section as markdown: `## title`, `extra` paragraphs (how this
/// section alone was produced), the intro, the tables.
fn render(s: &Section, extra: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## {}\n", s.title);
    for p in extra.iter().chain(&s.intro) {
        md.push_str(p);
        md.push_str("\n\n");
    }
    for t in &s.tables {
        let _ = writeln!(md, "### {}\n", t.title);
        let _ = writeln!(md, "| {} |", t.columns.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(t.columns.len()));
        for r in &t.rows {
            let _ = writeln!(md, "| {} |", r.join(" | "));
        }
        md.push('\n');
        for n in &t.notes {
            md.push_str(n);
            md.push_str("\n\n");
        }
    }
    md
}

/// `md` with the section titled `## title` (up to the next `## ` or the
/// next `<!-- ` marker line, which opens a section another suite writes
/// by its markers) replaced by `text`, or `text` appended when there is
/// none.
pub fn splice(md: &str, title: &str, text: &str) -> String {
    let heading = format!("## {title}\n");
    let start = if md.starts_with(&heading) {
        Some(0)
    } else {
        md.find(&format!("\n{heading}")).map(|i| i + 1)
    };
    match start {
        Some(start) => {
            let after = start + heading.len();
            let rest = &md[after..];
            let end = [rest.find("\n## "), rest.find("\n<!-- ")]
                .into_iter()
                .flatten()
                .min()
                .map_or(md.len(), |i| after + i + 1);
            format!("{}{text}{}", &md[..start], &md[end..])
        }
        None => format!("{}\n\n{text}", md.trim_end_matches('\n')),
    }
}

/// `md` with the text from `begin` to `end` (two marker lines, e.g.
/// `<!-- kube:begin -->`) replaced by `section`, or `section` appended.
pub fn splice_marked(md: &str, begin: &str, end: &str, section: &str) -> String {
    match (md.find(begin), md.find(end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &md[..b], &md[e + end.len()..]),
        _ => format!("{}\n\n{section}\n", md.trim_end()),
    }
}

/// Writes `section` (from its `begin` marker to its `end` marker) into
/// the repository's bench/results.md with [`splice_marked`]: the other
/// sections stay as they are. Returns the file's path.
pub fn write_marked(begin: &str, end: &str, section: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = crate::cmd::root().join("bench/results.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice_marked(&old, begin, end, section))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Now in UTC to the minute (`2026-12-05 17:45`, `date -u`); "" when
/// `date` cannot run.
pub fn utc_minute() -> String {
    output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Updates only `sections` in `dir/results.md` and `dir/results.json`
/// (a suite run alone: the other suites' figures stay), each headed by
/// `header` (machine, mode, date, noise of this run).
pub fn write_sections(
    dir: &Path,
    m: &Machine,
    header: &[String],
    sections: &[Section],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("results.md");
    let mut md = std::fs::read_to_string(&path).unwrap_or_default();
    let mut extra = vec![format!(
        "This section alone: machine {} cores, {} ({}), {} RAM, Linux {}; date {}.",
        m.cores,
        m.cpu,
        std::env::consts::ARCH,
        m.memory,
        m.kernel,
        m.date
    )];
    extra.extend(header.iter().cloned());
    for s in sections {
        md = splice(&md, &s.title, &render(s, &extra));
    }
    std::fs::write(&path, md)?;
    let jpath = dir.join("results.json");
    let mut doc: Value = std::fs::read_to_string(&jpath)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({"sections": []}));
    if !doc["sections"].is_array() {
        doc["sections"] = json!([]);
    }
    let list = doc["sections"].as_array_mut().expect("an array");
    for s in sections {
        let entry = json!({"title": s.title, "date": m.date, "results": s.json});
        match list.iter_mut().find(|e| e["title"] == s.title.as_str()) {
            Some(e) => *e = entry,
            None => list.push(entry),
        }
    }
    std::fs::write(&jpath, serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(())
}

/// Writes `dir/results.md` and `dir/results.json`.
pub fn write(
    dir: &Path,
    m: &Machine,
    header: &[String],
    sections: &[Section],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut md = String::new();
    md.push_str("# Strait benchmarks\n\n");
    md.push_str("Generated by `cargo xtask bench`; do not edit by hand.\n\n");
    let _ = writeln!(
        md,
        "Machine: {} cores, {} ({}), {} RAM, Linux {}. Date: {}.\n",
        m.cores,
        m.cpu,
        std::env::consts::ARCH,
        m.memory,
        m.kernel,
        m.date
    );
    for p in header {
        md.push_str(p);
        md.push_str("\n\n");
    }
    for s in sections {
        md.push_str(&render(s, &[]));
    }
    std::fs::write(dir.join("results.md"), md)?;
    let doc = json!({
        "machine": {"cores": m.cores, "cpu": m.cpu, "arch": std::env::consts::ARCH,
                    "memory": m.memory, "kernel": m.kernel},
        "date": m.date,
        "sections": sections.iter().map(|s| json!({"title": s.title, "results": s.json}))
            .collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_section_is_replaced_or_appended_and_the_rest_kept() {
        let (b, e) = ("<!-- k:begin -->", "<!-- k:end -->");
        let new = format!("{b}\nnew\n{e}");
        assert_eq!(
            splice_marked("# B\n\n## L4\n\nx\n", b, e, &new),
            format!("# B\n\n## L4\n\nx\n\n{new}\n")
        );
        assert_eq!(
            splice_marked(&format!("# B\n\n{b}\nold\n{e}\n\n## L7\n"), b, e, &new),
            format!("# B\n\n{new}\n\n## L7\n")
        );
    }

    #[test]
    fn a_section_is_replaced_or_appended_and_the_others_kept() {
        let md = "# B\n\n## L4\n\nx\n\n## Config: compile\n\nold\n\n## XDP\n\ny\n";
        let new = "## Config: compile\n\nnew\n\n";
        assert_eq!(
            splice(md, "Config: compile", new),
            "# B\n\n## L4\n\nx\n\n## Config: compile\n\nnew\n\n## XDP\n\ny\n"
        );
        let marked = "# B\n\n## Config: compile\n\nold\n\n<!-- xdp:begin -->\n## XDP\n\ny\n<!-- xdp:end -->\n";
        assert_eq!(
            splice(marked, "Config: compile", new),
            "# B\n\n## Config: compile\n\nnew\n\n<!-- xdp:begin -->\n## XDP\n\ny\n<!-- xdp:end -->\n",
            "a marker line that opens the next section is kept"
        );
        let appended = splice("# B\n\n## L4\n\nx\n", "Config: compile", new);
        assert_eq!(appended, format!("# B\n\n## L4\n\nx\n\n{new}"));
        assert_eq!(splice(&appended, "Config: compile", new), appended);
    }
}
