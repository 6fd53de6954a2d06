//! A strict reader of asciicast v2 files, for the recordings the tests make: the header's
//! fields and types, one event per line as `[time, code, data]`, codes `o`, `i`, `r`, `m`,
//! times that never go back, resizes written `WxH`. Anything else panics, naming the line.

use serde_json::Value;

/// A cast, read.
#[derive(Debug)]
pub struct Cast {
    /// The header line.
    pub header: Value,
    /// `(time, code, data)` in order.
    pub events: Vec<(f64, String, String)>,
}

impl Cast {
    /// Reads `text`, checking everything the format requires.
    pub fn parse(text: &str) -> Cast {
        let mut lines = text.lines();
        let header: Value = serde_json::from_str(lines.next().expect("a cast has a header line"))
            .expect("the header is JSON");
        assert_eq!(header["version"], 2, "version: {header}");
        for field in ["width", "height"] {
            let n = header[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field}: {header}"));
            assert!(n > 0, "{field} must be positive: {header}");
        }
        if !header["timestamp"].is_null() {
            assert!(header["timestamp"].is_u64(), "timestamp: {header}");
        }
        let mut events = Vec::new();
        let mut last = 0.0;
        for (i, line) in lines.enumerate() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 2));
            let parts = event
                .as_array()
                .unwrap_or_else(|| panic!("line {}: not an array", i + 2));
            assert_eq!(parts.len(), 3, "line {}: {line}", i + 2);
            let t = parts[0]
                .as_f64()
                .unwrap_or_else(|| panic!("line {}: time", i + 2));
            assert!(t >= last, "line {}: time goes back ({t} < {last})", i + 2);
            last = t;
            let code = parts[1]
                .as_str()
                .unwrap_or_else(|| panic!("line {}: code", i + 2));
            assert!(
                matches!(code, "o" | "i" | "r" | "m"),
                "line {}: code {code}",
                i + 2
            );
            let data = parts[2]
                .as_str()
                .unwrap_or_else(|| panic!("line {}: data", i + 2));
            if code == "r" {
                let (w, h) = data
                    .split_once('x')
                    .unwrap_or_else(|| panic!("line {}: resize {data}", i + 2));
                assert!(
                    w.parse::<u16>().is_ok() && h.parse::<u16>().is_ok(),
                    "line {}: resize {data}",
                    i + 2
                );
            }
            events.push((t, code.to_string(), data.to_string()));
        }
        Cast { header, events }
    }

    /// The output events' text, joined.
    pub fn output(&self) -> String {
        self.events
            .iter()
            .filter(|(_, code, _)| code == "o")
            .map(|(_, _, data)| data.as_str())
            .collect()
    }

    /// The events with `code`.
    pub fn of(&self, code: &str) -> Vec<&str> {
        self.events
            .iter()
            .filter(|(_, c, _)| c == code)
            .map(|(_, _, d)| d.as_str())
            .collect()
    }
}

/// `asciinema cat FILE`'s output, from PyPI `asciinema` in `.ci/venv/bin`, on the `PATH`,
/// or in `$ASCIINEMA`; panics with a hint when there is none.
pub fn asciinema_cat(file: &std::path::Path) -> String {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var("ASCIINEMA").ok().unwrap_or_else(|| {
        let venv = repo.join(".ci/venv/bin/asciinema");
        if venv.exists() {
            venv.display().to_string()
        } else {
            "asciinema".into()
        }
    });
    let out = std::process::Command::new(&bin)
        .arg("cat")
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("asciinema is needed for this test ({bin}: {e}): pip install asciinema into .ci/venv (CI does)")
        });
    assert!(
        out.status.success(),
        "asciinema cat {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
