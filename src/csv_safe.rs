//! The one CSV writer of what the service and its commands hand to spreadsheets (the list
//! export, the import's results): RFC 4180 quoting, CRLF line ends, and a guard against
//! formulas (a value starting with `=`, `+`, `-` or `@` is prefixed with `'`, so that a
//! spreadsheet never runs a value as a formula: CSV injection). A leaf module.

/// Appends one field, guarded and quoted when needed.
pub fn field(out: &mut String, v: &str) {
    let guarded;
    let v = if v.starts_with(['=', '+', '-', '@']) {
        guarded = format!("'{v}");
        guarded.as_str()
    } else {
        v
    };
    if v.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// One record with its CRLF.
pub fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(&mut out, f.as_ref());
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut s = String::new();
        field(&mut s, "plain");
        s.push('|');
        field(&mut s, "a,b \"c\"");
        s.push('|');
        field(&mut s, "=HYPERLINK(\"x\")");
        assert_eq!(s, "plain|\"a,b \"\"c\"\"\"|\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(record(&["a", "-1", "x\ny"]), "a,'-1,\"x\ny\"\r\n");
    }
}
