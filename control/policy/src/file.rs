//! Reading an override file: a YAML mapping or a JSON object of rule name to rule string.
//!
//! oslo reads both with one YAML loader (JSON is YAML). Text that starts with `{` goes
//! to a JSON parser here instead, because YAML is stricter about tabs and its error
//! messages about JSON are poor; everything else is read as YAML. Duplicate names are
//! refused by the YAML loader; in JSON the last one wins, as with Python's `json`.

use yaml_rust2::{Yaml, YamlLoader};

use crate::error::FileProblem;

/// The `(name, rule text)` pairs of an override file, in file order for YAML.
pub(crate) fn parse_overrides(text: &str) -> Result<Vec<(String, String)>, FileProblem> {
    let body = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if body.starts_with('{') {
        return json(body);
    }
    yaml(text)
}

fn json(text: &str) -> Result<Vec<(String, String)>, FileProblem> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(FileProblem::Json)?;
    let serde_json::Value::Object(map) = value else {
        return Err(FileProblem::NotAMapping);
    };
    map.into_iter()
        .map(|(name, v)| match v {
            serde_json::Value::String(rule) => Ok((name, rule)),
            _ => Err(FileProblem::NotAString { name }),
        })
        .collect()
}

fn yaml(text: &str) -> Result<Vec<(String, String)>, FileProblem> {
    let mut docs = YamlLoader::load_from_str(text).map_err(FileProblem::Yaml)?;
    if docs.len() > 1 {
        return Err(FileProblem::MultipleDocuments);
    }
    let hash = match docs.pop() {
        // An empty file, or one holding only comments or `~`: no overrides (oslo: `parsed or {}`).
        None | Some(Yaml::Null) => return Ok(Vec::new()),
        Some(Yaml::Hash(hash)) => hash,
        Some(_) => return Err(FileProblem::NotAMapping),
    };
    hash.into_iter()
        .map(|(k, v)| {
            let name = match k {
                Yaml::String(name) => name,
                other => return Err(FileProblem::NameNotString { key: show(&other) }),
            };
            match v {
                Yaml::String(rule) => Ok((name, rule)),
                _ => Err(FileProblem::NotAString { name }),
            }
        })
        .collect()
}

/// A non-string YAML key, for an error message.
fn show(key: &Yaml) -> String {
    match key {
        Yaml::Integer(n) => n.to_string(),
        Yaml::Real(s) => s.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".to_owned(),
        Yaml::Array(_) => "(a sequence)".to_owned(),
        Yaml::Hash(_) => "(a mapping)".to_owned(),
        Yaml::String(s) => s.clone(),
        Yaml::Alias(_) | Yaml::BadValue => "(an alias)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn yaml_mapping_in_order() {
        let text = "# comment\n\"volume:create\": \"rule:admin_api\"\nvolume:get: role:admin or role:reader\n'backup:create': ''\n";
        assert_eq!(
            parse_overrides(text).ok(),
            Some(pairs(&[
                ("volume:create", "rule:admin_api"),
                ("volume:get", "role:admin or role:reader"),
                ("backup:create", ""),
            ]))
        );
    }

    #[test]
    fn json_object() {
        let text = "\u{feff}\n{\n\t\"volume:create\": \"rule:admin_api\",\n\t\"a\": \"@\"\n}\n";
        let mut got = parse_overrides(text).ok();
        if let Some(v) = got.as_mut() {
            v.sort();
        }
        assert_eq!(
            got,
            Some(pairs(&[("a", "@"), ("volume:create", "rule:admin_api")]))
        );
    }

    #[test]
    fn empty_files_override_nothing() {
        for text in ["", "\n", "# nothing\n", "~\n", "---\n"] {
            assert_eq!(parse_overrides(text).ok(), Some(Vec::new()), "{text:?}");
        }
    }

    #[test]
    fn malformed_files_are_refused() {
        let problem = |text: &str| parse_overrides(text).err().map(|e| e.to_string());
        assert!(matches!(
            parse_overrides("a: [\n"),
            Err(FileProblem::Yaml(_))
        ));
        assert!(matches!(
            parse_overrides("{\"a\": }"),
            Err(FileProblem::Json(_))
        ));
        assert!(matches!(
            parse_overrides("a: x\na: y\n"),
            Err(FileProblem::Yaml(_))
        ));
        assert!(matches!(
            parse_overrides("a: x\n---\nb: y\n"),
            Err(FileProblem::MultipleDocuments)
        ));
        assert!(matches!(
            parse_overrides("- a\n- b\n"),
            Err(FileProblem::NotAMapping)
        ));
        assert!(matches!(
            parse_overrides("[\"a\"]"),
            Err(FileProblem::NotAMapping)
        ));
        assert_eq!(
            problem("volume:create:\n"),
            Some(
                "the rule volume:create has no string value (quote the rule; \"\" allows \
                 everyone; lists of lists are not supported)"
                    .to_owned()
            )
        );
        assert!(matches!(
            parse_overrides("a: true\n"),
            Err(FileProblem::NotAString { .. })
        ));
        assert!(matches!(
            parse_overrides("a: [[\"role:admin\"]]\n"),
            Err(FileProblem::NotAString { .. })
        ));
        assert!(matches!(
            parse_overrides("{\"a\": 1}"),
            Err(FileProblem::NotAString { .. })
        ));
        assert_eq!(
            problem("5: role:admin\n"),
            Some("the rule name 5 is not a string".to_owned())
        );
    }
}
