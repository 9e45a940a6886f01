//! An activation's log lines as upstream's log store writes them into its record
//! (`DockerToActivationLogStore`: `LogLine.toFormattedString`, `f"$time%-30s $stream: $log"`),
//! from what a plugin's `logs` returned: the sentinels cut out, the log limit applied with
//! upstream's truncation line, and upstream's warning lines where it adds them.

/// OpenWhisk runtimes end each activation's output with this line on stdout and stderr.
pub const SENTINEL: &str = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";

/// Upstream's `Messages.logWarningDeveloperError`, appended (on stderr) to the logs of an
/// activation that ended in a developer error.
pub const DEVELOPER_ERROR_WARNING: &str =
    "The action did not initialize or run as expected. Log data might be missing.";

/// Upstream's `Messages.logFailure`: the sentinels did not come in time.
pub const COLLECTING_FAILED: &str =
    "There was an issue while collecting your logs. Data might be missing.";

/// Upstream's `Messages.truncateLogs(limit)`.
pub fn truncated(limit_bytes: u64) -> String {
    format!("Logs were truncated because the total bytes size exceeds the limit of {limit_bytes} bytes.")
}

/// One line as upstream formats it: the time left-aligned in 30 columns, the stream, the text.
pub fn line(time: &str, stream: &str, text: &str) -> String {
    format!(
        "{time:<30} {stream}: {}",
        text.trim_end_matches(['\n', '\r'])
    )
}

/// A line the host adds itself (truncation, warnings): stamped now, on stderr.
pub fn notice(now_ms: i64, text: &str) -> String {
    line(&instant(now_ms), "stderr", text)
}

/// What reading a container's output gave, for the record.
#[derive(Debug)]
pub struct Read<'a> {
    /// The plugin's answer: lines already in upstream's form (the SDK's engines write them so)
    /// or plain lines (stamped `now_ms`, on stdout).
    pub text: &'a str,
    /// The action's log limit in bytes.
    pub limit_bytes: u64,
    /// Both sentinels were seen (or none were waited for).
    pub complete: bool,
    /// The activation ended in a developer error.
    pub developer_error: bool,
    pub now_ms: i64,
}

impl Read<'_> {
    /// The record's `logs`.
    pub fn lines(&self) -> Vec<String> {
        let now = instant(self.now_ms);
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut cut = false;
        for raw in self.text.lines().filter(|l| !l.contains(SENTINEL)) {
            // upstream counts each line of the engine's log with its newline
            size += raw.len() as u64 + 1;
            if size > self.limit_bytes {
                cut = true;
                break;
            }
            out.push(formatted(raw).unwrap_or_else(|| line(&now, "stdout", raw)));
        }
        if cut {
            out.push(notice(self.now_ms, &truncated(self.limit_bytes)));
        } else if !self.complete && !self.developer_error {
            out.push(notice(self.now_ms, COLLECTING_FAILED));
        }
        if self.developer_error {
            out.push(notice(self.now_ms, DEVELOPER_ERROR_WARNING));
        }
        out
    }
}

/// `raw` again, its time padded to 30 columns, if it already has upstream's form
/// (`<ISO-8601 time> stdout|stderr: <text>`).
fn formatted(raw: &str) -> Option<String> {
    let (time, rest) = raw.split_once(' ')?;
    let rest = rest.trim_start_matches(' ');
    let (stream, text) = rest
        .strip_prefix("stdout: ")
        .map(|t| ("stdout", t))
        .or_else(|| rest.strip_prefix("stderr: ").map(|t| ("stderr", t)))?;
    let iso = time.len() >= 20
        && time.ends_with('Z')
        && time.as_bytes()[4] == b'-'
        && time.as_bytes()[10] == b'T';
    iso.then(|| line(time, stream, text))
}

/// Epoch milliseconds as Java's `Instant.toString` writes them (`2026-12-06T23:36:52.123Z`;
/// no fraction when it is zero).
pub fn instant(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let millis = ms.rem_euclid(1000);
    let fraction = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_as_java_writes_them() {
        assert_eq!(instant(0), "1970-01-01T00:00:00Z");
        assert_eq!(instant(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(instant(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }

    /// `LogLine("2018-03-05T02:10:12.489056989Z", "stdout", "hello\n").toFormattedString`
    /// and a shorter time (Docker trims trailing zeros) padded to 30 columns.
    #[test]
    fn lines_as_upstreams_log_line_formats_them() {
        let read = Read {
            text: "2018-03-05T02:10:12.489056989Z stdout: hello\n\
                   2018-03-05T02:10:12.5Z stderr: oops\n\
                   XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n\
                   plain line\n",
            limit_bytes: 10 * 1024 * 1024,
            complete: true,
            developer_error: false,
            now_ms: 1_700_000_000_123,
        };
        assert_eq!(
            read.lines(),
            vec![
                "2018-03-05T02:10:12.489056989Z stdout: hello".to_string(),
                "2018-03-05T02:10:12.5Z         stderr: oops".into(),
                "2023-11-14T22:13:20.123Z       stdout: plain line".into(),
            ]
        );
    }

    #[test]
    fn the_limit_ends_with_upstreams_truncation_line_and_errors_add_their_warning() {
        let text = "2018-03-05T02:10:12.489056989Z stdout: 0123456789\n".repeat(10);
        let read = Read {
            text: &text,
            limit_bytes: 120,
            complete: true,
            developer_error: true,
            now_ms: 1_700_000_000_000,
        };
        let lines = read.lines();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(
            lines[2],
            "2023-11-14T22:13:20Z           stderr: Logs were truncated because the total bytes size exceeds the limit of 120 bytes."
        );
        assert_eq!(
            lines[3],
            format!("2023-11-14T22:13:20Z           stderr: {DEVELOPER_ERROR_WARNING}")
        );
        let late = Read {
            text: "x\n",
            limit_bytes: 100,
            complete: false,
            developer_error: false,
            now_ms: 0,
        };
        assert!(late.lines()[1].ends_with(COLLECTING_FAILED));
    }
}
