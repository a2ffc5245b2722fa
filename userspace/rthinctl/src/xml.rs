//! A small pull parser for the thin metadata XML (elements and attributes only; text,
//! comments and declarations are skipped).

use anyhow::{anyhow, bail, Result};

/// One XML event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `<name attrs>`
    Start(String, Vec<(String, String)>),
    /// `<name attrs/>`
    Empty(String, Vec<(String, String)>),
    /// `</name>`
    End(String),
}

/// Parse a whole document into events.
pub fn parse(text: &str) -> Result<Vec<Event>> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        if rest.starts_with("<!--") {
            let end = rest
                .find("-->")
                .ok_or_else(|| anyhow!("unterminated comment at byte {i}"))?;
            i += end + 3;
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest
                .find('>')
                .ok_or_else(|| anyhow!("unterminated declaration at byte {i}"))?;
            i += end + 1;
            continue;
        }
        let end = find_tag_end(rest).ok_or_else(|| anyhow!("unterminated tag at byte {i}"))?;
        let inner = &rest[1..end];
        i += end + 1;
        if let Some(name) = inner.strip_prefix('/') {
            out.push(Event::End(name.trim().to_string()));
            continue;
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(s) => (s, true),
            None => (inner, false),
        };
        let (name, attrs) = parse_tag(inner).map_err(|e| anyhow!("at byte {i}: {e}"))?;
        out.push(if empty {
            Event::Empty(name, attrs)
        } else {
            Event::Start(name, attrs)
        });
    }
    Ok(out)
}

fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"') | (None, '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_tag(s: &str) -> Result<(String, Vec<(String, String)>)> {
    let s = s.trim();
    let name_end = s.find(char::is_whitespace).unwrap_or(s.len());
    let name = s[..name_end].to_string();
    if name.is_empty() {
        bail!("empty tag name");
    }
    let mut attrs = Vec::new();
    let mut rest = s[name_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| anyhow!("attribute without value in <{name}>"))?;
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let q = after
            .chars()
            .next()
            .ok_or_else(|| anyhow!("missing attribute value in <{name}>"))?;
        if q != '"' && q != '\'' {
            bail!("unquoted attribute value in <{name}>");
        }
        let close = after[1..]
            .find(q)
            .ok_or_else(|| anyhow!("unterminated attribute value in <{name}>"))?;
        attrs.push((key, unescape(&after[1..1 + close])));
        rest = after[close + 2..].trim_start();
    }
    Ok((name, attrs))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Look up a required numeric attribute.
pub fn num<T: std::str::FromStr>(attrs: &[(String, String)], tag: &str, key: &str) -> Result<T> {
    let v = attrs
        .iter()
        .find(|(k, _)| k == key)
        .ok_or_else(|| anyhow!("missing attribute '{key}' in <{tag}>"))?;
    v.1.parse()
        .map_err(|_| anyhow!("bad value '{}' for attribute '{key}' in <{tag}>", v.1))
}

/// Look up an optional numeric attribute.
pub fn opt_num<T: std::str::FromStr>(
    attrs: &[(String, String)],
    tag: &str,
    key: &str,
) -> Result<Option<T>> {
    if attrs.iter().any(|(k, _)| k == key) {
        num(attrs, tag, key).map(Some)
    } else {
        Ok(None)
    }
}

/// Look up a string attribute.
pub fn text<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
