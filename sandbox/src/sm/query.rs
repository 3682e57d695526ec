//! `GET /v1/service_bindings`: `labelQuery` / `fieldQuery` parsed with Service Manager's
//! grammar (`eq`, `ne`, `in`, `notin`, `and`; `''` escapes a quote) and `max_items` /
//! `token` paging.

use super::*;

/// One condition of a label or field query.
#[derive(Debug, PartialEq)]
pub(super) struct Cond {
    pub(super) key: String,
    pub(super) op: String,
    pub(super) values: Vec<String>,
}

/// Parses `key op value [and key op value]…`, values `'quoted'` (with `''` for a quote) or
/// a parenthesised list of them for `in` / `notin`.
pub(super) fn parse_query(q: &str) -> Result<Vec<Cond>, String> {
    let mut out = Vec::new();
    let mut rest = q.trim();
    loop {
        let (key, r) = rest
            .split_once(' ')
            .ok_or_else(|| format!("query {q:?}: expected `key op value`"))?;
        let r = r.trim_start();
        let (op, r) = r
            .split_once(' ')
            .ok_or_else(|| format!("query {q:?}: expected an operator after {key}"))?;
        if !["eq", "ne", "in", "notin"].contains(&op) {
            return Err(format!("query {q:?}: unsupported operator {op:?}"));
        }
        let mut r = r.trim_start();
        let mut values = Vec::new();
        let list = r.starts_with('(');
        if list {
            r = &r[1..];
        }
        loop {
            r = r.trim_start();
            let (v, after) =
                quoted(r).ok_or_else(|| format!("query {q:?}: expected a quoted value"))?;
            values.push(v);
            r = after.trim_start();
            if list && r.starts_with(',') {
                r = &r[1..];
                continue;
            }
            if list {
                r = r
                    .strip_prefix(')')
                    .ok_or_else(|| format!("query {q:?}: unclosed list"))?;
            }
            break;
        }
        out.push(Cond {
            key: key.to_string(),
            op: op.to_string(),
            values,
        });
        let r = r.trim_start();
        if r.is_empty() {
            return Ok(out);
        }
        rest = r
            .strip_prefix("and ")
            .ok_or_else(|| format!("query {q:?}: expected `and`"))?
            .trim_start();
    }
}

pub(super) fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('\'')?.char_indices();
    let body = s.get(1..)?;
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if body[i + 1..].starts_with('\'') {
                out.push('\'');
                chars.next();
                continue;
            }
            return Some((out, &body[i + 1..]));
        }
        out.push(c);
    }
    None
}

/// Whether every condition holds, `get` naming the values a key has (borrowed: a list runs
/// this over every binding).
pub(super) fn matches<'v>(conds: &[Cond], get: impl Fn(&str) -> &'v [String]) -> bool {
    conds.iter().all(|c| {
        let have = get(&c.key);
        let any = c.values.iter().any(|v| have.contains(v));
        match c.op.as_str() {
            "eq" | "in" => any,
            _ => !any,
        }
    })
}

pub(super) fn list(sh: &Shared, params: &[(String, String)]) -> Response<Full<Bytes>> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let parse = |k: &str| get(k).map(parse_query).transpose();
    let (labels, fields) = match (parse("labelQuery"), parse("fieldQuery")) {
        (Ok(l), Ok(f)) => (l.unwrap_or_default(), f.unwrap_or_default()),
        (Err(m), _) | (_, Err(m)) => return sm_error(400, "BadRequest", &m),
    };
    let max = get("max_items")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    let after: u64 = get("token").and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut s = lock(&sh.state);
    settle(&mut s, sh);
    let mut hits = s.bindings.iter().filter(|b| {
        b.seq > after
            // Fields first: one comparison of the instance id rules out most bindings.
            && matches(&fields, |k| match k {
                "id" => std::slice::from_ref(&b.id),
                "name" => std::slice::from_ref(&b.name),
                "service_instance_id" => std::slice::from_ref(&b.instance_id),
                _ => &[],
            })
            && matches(&labels, |k| b.labels.get(k).map_or(&[][..], Vec::as_slice))
    });
    let page: Vec<&Binding> = hits.by_ref().take(max).collect();
    let more = hits.next().is_some();
    let mut body = json!({
        "num_items": page.len(),
        "items": page.iter().map(|b| binding_json(b, false)).collect::<Vec<_>>(),
    });
    if more && let Some(last) = page.last() {
        body["token"] = json!(last.seq.to_string());
    }
    reply(200, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn queries_parse_with_quotes_lists_and_and() {
        let q =
            parse_query("managed_by eq 'certrot' and certrot_credential in ('o''brien', 'x y')")
                .unwrap();
        assert_eq!(
            q,
            vec![
                Cond {
                    key: "managed_by".into(),
                    op: "eq".into(),
                    values: vec!["certrot".into()]
                },
                Cond {
                    key: "certrot_credential".into(),
                    op: "in".into(),
                    values: vec!["o'brien".into(), "x y".into()]
                },
            ]
        );
        assert!(parse_query("a eq b").is_err());
        assert!(parse_query("a like 'b'").is_err());
        assert!(parse_query("a in ('b'").is_err());
        assert!(parse_query("a eq 'b' or c eq 'd'").is_err());
        let certrot = ["certrot".to_string()];
        let labels = |k: &str| match k {
            "managed_by" => &certrot[..],
            _ => &[],
        };
        assert!(matches(
            &parse_query("managed_by eq 'certrot'").unwrap(),
            labels
        ));
        assert!(!matches(
            &parse_query("managed_by ne 'certrot'").unwrap(),
            labels
        ));
        assert!(matches(&parse_query("other notin ('a')").unwrap(), labels));
    }
}
