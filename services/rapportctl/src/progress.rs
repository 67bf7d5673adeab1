//! Progress drawn while rapportctl waits for a service.

/// Draws one progress line on a terminal (and nothing elsewhere).
pub(crate) fn progress(line: &str) {
    use std::io::{IsTerminal as _, Write as _};
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }
}
