//! The query parameters the API server reads to tell a list from a watch and to find a
//! name: decoded as Go's `url.ParseQuery` does, booleans as its parameter codec reads
//! them, field selectors as `fields.ParseSelector`.

/// The values of `key` in `query`, decoded as Go's `url.ParseQuery` does for the API
/// server: pairs split on `&`, a pair that holds `;` or a bad percent-escape skipped,
/// `+` a space, escapes decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((unescape_query(k)?, unescape_query(v)?))
        })
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` on a bad escape or a
/// result that is not UTF-8.
fn unescape_query(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A boolean query parameter as the API server reads it
/// (`Convert_Slice_string_To_bool`): absent is false; its first value is false when it
/// is `0` or `false` in any case; anything else, the empty string included, is true.
pub(super) fn query_bool(query: &str, key: &str) -> bool {
    match query_values(query, key).first() {
        None => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

/// The list options the API server decodes before it reads `watch` and `fieldSelector`;
/// `None` when decoding fails (an integer that is not one, a field selector that does
/// not parse), in which case it reads `watch` alone.
pub(super) fn list_options(query: &str) -> Option<(bool, Option<String>)> {
    for key in ["limit", "timeoutSeconds"] {
        if let Some(v) = query_values(query, key).first() {
            v.parse::<i64>().ok()?;
        }
    }
    let name = match query_values(query, "fieldSelector").first() {
        Some(selector) => exact_name(selector)?,
        None => None,
    };
    Some((query_bool(query, "watch"), name))
}

/// The name a field selector requires exactly (`metadata.name=web`, `==`), as
/// `fields.ParseSelector` and `RequiresExactMatch` read it: `None` inside when it
/// requires none; `None` outside when the selector does not parse.
fn exact_name(selector: &str) -> Option<Option<String>> {
    let mut found = None;
    for term in split_unescaped(selector, ',') {
        if term.is_empty() {
            continue;
        }
        let (field, op, value) = split_term(&term)?;
        let value = unescape_selector(value)?;
        if field.trim() == "metadata.name" && op != "!=" {
            found.get_or_insert(value);
        }
    }
    Some(found)
}

/// `text` split on `sep` where it is not escaped with `\`.
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let (mut parts, mut part, mut escaped) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        if escaped {
            part.push(c);
            escaped = false;
        } else if c == '\\' {
            part.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut part));
        } else {
            part.push(c);
        }
    }
    parts.push(part);
    parts
}

/// A selector term at its first unescaped operator (`!=`, `==`, `=`).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// A selector value with its escapes (`\\`, `\,`, `\=`) undone; `None` on another escape.
fn unescape_selector(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                e @ ('\\' | ',' | '=') => out.push(e),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Whether `name` may be a path segment (`path.IsValidPathSegmentName`).
pub(super) fn is_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}
