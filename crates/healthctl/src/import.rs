//! `healthctl patients import FILE`: registers a hospital's patients from NDJSON (one object a
//! line) or CSV (a header line naming the columns), and links each to its account when the row
//! names one. Columns: `patient_id` (the hospital's id; idempotent, so the import can run again),
//! `given_name`, `family_name`, `birth_date` (`YYYY-MM-DD`), optional `user_id`. A row that
//! fails is reported with its line number and the platform's answer, and the import goes on.

use serde_json::{Value, json};

/// One patient to register, as read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The line it came from (1-based), for the report.
    pub line: usize,
    pub patient_id: String,
    pub given_name: String,
    pub family_name: String,
    pub birth_date: String,
    pub user_id: Option<String>,
}

const COLUMNS: [&str; 5] = ["patient_id", "given_name", "family_name", "birth_date", "user_id"];

/// The rows of `text`, NDJSON if its first non-empty line is a JSON object, else CSV; a line
/// that does not read is an error for that line alone.
pub fn rows(text: &str) -> Vec<Result<Row, (usize, String)>> {
    let mut lines =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r'))).filter(|(_, l)| !l.trim().is_empty());
    let Some((first_line, first)) = lines.next() else {
        return Vec::new();
    };
    if first.trim_start().starts_with('{') {
        return std::iter::once((first_line, first)).chain(lines).map(|(n, l)| ndjson_row(n, l)).collect();
    }
    let header = match csv_fields(first) {
        Some(header) => header,
        None => return vec![Err((first_line, "the header line does not read as CSV".into()))],
    };
    let missing: Vec<&str> = COLUMNS[..4].iter().copied().filter(|c| !header.iter().any(|h| h == c)).collect();
    if !missing.is_empty() {
        return vec![Err((first_line, format!("the header lacks {}", missing.join(", "))))];
    }
    lines
        .map(|(n, line)| {
            let fields = csv_fields(line).ok_or((n, "the line does not read as CSV".to_owned()))?;
            if fields.len() != header.len() {
                return Err((n, format!("{} fields where the header has {}", fields.len(), header.len())));
            }
            let field = |name: &str| header.iter().position(|h| h == name).map(|i| fields[i].clone());
            Ok(Row {
                line: n,
                patient_id: field("patient_id").unwrap_or_default(),
                given_name: field("given_name").unwrap_or_default(),
                family_name: field("family_name").unwrap_or_default(),
                birth_date: field("birth_date").unwrap_or_default(),
                user_id: field("user_id").filter(|u| !u.is_empty()),
            })
        })
        .collect()
}

fn ndjson_row(line: usize, text: &str) -> Result<Row, (usize, String)> {
    let value: Value = serde_json::from_str(text).map_err(|e| (line, format!("not a JSON object: {e}")))?;
    let object = value.as_object().ok_or((line, "not a JSON object".to_owned()))?;
    if let Some(unknown) = object.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
        return Err((line, format!("unknown field {unknown:?}")));
    }
    let field = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
    let required = |name: &str| field(name).ok_or((line, format!("{name} is missing or not text")));
    Ok(Row {
        line,
        patient_id: required("patient_id")?,
        given_name: required("given_name")?,
        family_name: required("family_name")?,
        birth_date: required("birth_date")?,
        user_id: field("user_id"),
    })
}

/// The fields of one CSV line (RFC 4180: `"` quotes a field, `""` inside it is a quote).
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let (mut fields, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields.into_iter().map(|f| f.trim().to_owned()).collect())
}

/// Registers (and links) every row through `call(method, path, body)`, which answers the
/// platform's status and body; returns the report. Never stops at a failed row.
pub fn run(rows: Vec<Result<Row, (usize, String)>>, mut call: impl FnMut(&str, &str, Value) -> (u16, Value)) -> Value {
    let (mut created, mut unchanged, mut linked, mut errors) = (0, 0, 0, Vec::new());
    let total = rows.len();
    for row in rows {
        let row = match row {
            Ok(row) => row,
            Err((line, error)) => {
                errors.push(json!({ "line": line, "error": error }));
                continue;
            }
        };
        let body = json!({
            "patient_id": row.patient_id, "given_name": row.given_name,
            "family_name": row.family_name, "birth_date": row.birth_date,
        });
        match call("POST", "/api/admin/patients", body) {
            (201, _) => created += 1,
            (200, _) => unchanged += 1,
            (status, answer) => {
                errors
                    .push(json!({ "line": row.line, "patient_id": row.patient_id, "status": status, "error": answer }));
                continue;
            }
        }
        let Some(user_id) = row.user_id else { continue };
        let path = format!("/api/admin/patients/{}/account", row.patient_id);
        match call("PUT", &path, json!({ "user_id": user_id })) {
            (200, _) => linked += 1,
            (status, answer) => {
                let error =
                    json!({ "line": row.line, "patient_id": row.patient_id, "status": status, "error": answer });
                errors.push(error);
            }
        }
    }
    json!({ "rows": total, "created": created, "unchanged": unchanged, "linked": linked, "errors": errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quotes_and_ndjson_read_alike_and_a_bad_line_is_its_own_error() {
        let csv = "patient_id,given_name,family_name,birth_date,user_id\n\
                   p-1,Ada,\"King, Jr.\",1990-01-01,u-ada\n\
                   p-2,\"Bo \"\"B\"\"\",Lee,1991-02-03,\n\
                   p-3,only,three\n";
        let read = rows(csv);
        assert_eq!(read.len(), 3);
        let ada = read[0].as_ref().expect("row");
        assert_eq!((ada.line, ada.family_name.as_str(), ada.user_id.as_deref()), (2, "King, Jr.", Some("u-ada")));
        let bo = read[1].as_ref().expect("row");
        assert_eq!((bo.given_name.as_str(), bo.user_id.as_deref()), ("Bo \"B\"", None));
        assert_eq!(read[2].as_ref().map_err(|(line, _)| *line), Err(4));

        let ndjson = "{\"patient_id\":\"p-1\",\"given_name\":\"Ada\",\"family_name\":\"King, Jr.\",\"birth_date\":\"1990-01-01\",\"user_id\":\"u-ada\"}\n\n{\"patient_id\":\"p-2\",\"role\":\"admin\"}\n";
        let read = rows(ndjson);
        assert_eq!(read[0].as_ref().ok(), rows(csv)[0].as_ref().ok().map(|r| Row { line: 1, ..r.clone() }).as_ref());
        assert_eq!(read[1].as_ref().map_err(|(line, e)| (*line, e.contains("role"))), Err((3, true)));
        assert!(rows("given_name,family_name\nA,B\n")[0].as_ref().is_err_and(|(_, e)| e.contains("patient_id")));
    }

    #[test]
    fn the_import_reports_each_failed_row_and_carries_on() {
        let csv = "patient_id,given_name,family_name,birth_date,user_id\n\
                   p-1,Ada,King,1990-01-01,u-ada\np-2,Bo,Lee,1991-02-30,\np-3,Cy,Ng,1992-03-04,u-taken\np-4,Di,Oz,1993-04-05,\n";
        let mut calls = Vec::new();
        let report = run(rows(csv), |method, path, body| {
            calls.push(format!("{method} {path}"));
            match (method, body["patient_id"].as_str(), body["user_id"].as_str()) {
                ("POST", Some("p-2"), _) => (400, json!({ "title": "Bad Request" })),
                ("POST", Some("p-4"), _) => (200, json!({})),
                ("POST", _, _) => (201, json!({})),
                (_, _, Some("u-taken")) => (409, json!({ "title": "Conflict" })),
                _ => (200, json!({})),
            }
        });
        assert_eq!((report["rows"].clone(), report["created"].clone()), (json!(4), json!(2)));
        assert_eq!((report["unchanged"].clone(), report["linked"].clone()), (json!(1), json!(1)));
        let failed: Vec<_> = report["errors"].as_array().expect("errors").iter().map(|e| e["line"].clone()).collect();
        assert_eq!(failed, [json!(3), json!(4)]);
        assert_eq!(calls.len(), 6, "every row tried: {calls:?}");
    }
}
