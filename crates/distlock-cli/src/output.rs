//! Human tables and JSON for `status` and `list`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use distlock::{Holder, LockInfo, LockMode, OwnerInfo, Waiter};

/// Writes `text` to stdout. A closed pipe (`distlock list | head -1`) is not an error.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// One lock as a single line of JSON.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string(value).expect("lock states serialize to JSON");
    text.push('\n');
    text
}

/// `distlock status NAME` for humans.
pub fn status(info: &LockInfo, now: SystemTime) -> String {
    let name = format!("{:?}", info.name);
    if info.holders.is_empty() && info.waiters.is_empty() {
        return format!("lock {name} is free\n");
    }
    let mut out = format!(
        "lock {name} ({} backend): {}, {}\n",
        clean(&info.backend),
        plural(info.holders.len(), "holder"),
        plural(info.waiters.len(), "waiter"),
    );
    if !info.holders.is_empty() {
        let mut rows = vec![row([
            "MODE",
            "TOKEN",
            "PID",
            "HOST",
            "SINCE",
            "EXPIRES",
            "OWNER",
            "DESCRIPTION",
        ])];
        rows.extend(info.holders.iter().map(|h| holder_row(h, now)));
        out.push('\n');
        out.push_str(&table(&rows));
    }
    if !info.waiters.is_empty() {
        let mut rows = vec![row([
            "MODE",
            "PRIORITY",
            "PID",
            "HOST",
            "WAITING",
            "OWNER",
            "DESCRIPTION",
        ])];
        rows.extend(info.waiters.iter().map(|w| waiter_row(w, now)));
        out.push_str("\nwaiters:\n");
        out.push_str(&table(&rows));
    }
    out
}

/// `distlock list` for humans.
pub fn list(infos: &[LockInfo]) -> String {
    if infos.is_empty() {
        return "no locks are held or waited for\n".to_owned();
    }
    let mut rows = vec![row([
        "NAME",
        "HOLDERS",
        "WAITERS",
        "TOKEN",
        "PID",
        "DESCRIPTION",
    ])];
    for info in infos {
        let first = info.holders.first();
        rows.push(vec![
            format!("{:?}", info.name),
            info.holders.len().to_string(),
            info.waiters.len().to_string(),
            first.map_or("-".into(), |h| h.token.to_string()),
            first.map_or("-".into(), |h| h.owner.pid.to_string()),
            first.map_or(String::new(), |h| description(&h.owner)),
        ]);
    }
    table(&rows)
}

fn holder_row(holder: &Holder, now: SystemTime) -> Vec<String> {
    let owner = &holder.owner;
    vec![
        mode(holder.mode),
        holder.token.to_string(),
        owner.pid.to_string(),
        clean(&owner.host),
        ago(owner.since, now),
        holder
            .expires
            .map_or_else(|| "-".to_owned(), |at| until(at, now)),
        short_owner(owner),
        description(owner),
    ]
}

fn waiter_row(waiter: &Waiter, now: SystemTime) -> Vec<String> {
    let owner = &waiter.owner;
    vec![
        mode(waiter.mode),
        waiter.priority.to_string(),
        owner.pid.to_string(),
        clean(&owner.host),
        short_duration(now.duration_since(owner.since).unwrap_or_default()),
        short_owner(owner),
        description(owner),
    ]
}

fn mode(mode: LockMode) -> String {
    mode.to_string()
}

/// The first 8 hex digits of the owner id; `--json` has all 32.
fn short_owner(owner: &OwnerInfo) -> String {
    owner.owner.to_string().chars().take(8).collect()
}

fn description(owner: &OwnerInfo) -> String {
    owner.description.as_deref().map(clean).unwrap_or_default()
}

fn ago(at: SystemTime, now: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(elapsed) => format!("{} ago", short_duration(elapsed)),
        Err(_) => "just now".to_owned(),
    }
}

fn until(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(left) => format!("in {}", short_duration(left)),
        Err(past) => format!("{} ago", short_duration(past.duration())),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A duration for humans, to the second: `7s`, `3m05s`, `2h10m`, `3d4h`.
pub fn short_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Text from the backend, made safe for a terminal: control characters are escaped.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_humans() {
        assert_eq!(short_duration(Duration::from_millis(900)), "0s");
        assert_eq!(short_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(short_duration(Duration::from_secs(7300)), "2h01m");
        assert_eq!(short_duration(Duration::from_secs(90000)), "1d1h");
    }

    #[test]
    fn tables_align() {
        let rows = vec![row(["A", "BB", "C"]), row(["long", "x", "y"])];
        assert_eq!(table(&rows), "A     BB  C\nlong  x   y\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(clean("plain é"), "plain é");
    }

    #[test]
    fn free_lock() {
        let info = LockInfo::new("x", "file");
        assert_eq!(status(&info, SystemTime::now()), "lock \"x\" is free\n");
    }
}
