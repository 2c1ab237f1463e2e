//! Application variables (`[variables]`) and component variable templates, resolved the way
//! Spin's default providers do: `SPIN_VARIABLE_<NAME>` from the environment, then the default.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};

use crate::manifest::Variable;

/// Spin variable names: lowercase ASCII letters, digits and underscores, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    name_error(name).is_none()
}

/// Why `name` is not a variable name, in Spin's words (`Key::validate` in
/// `crates/expressions/src/lib.rs`), or `None` if it is one.
pub fn name_error(name: &str) -> Option<String> {
    let reason = if name.is_empty() {
        "must not be empty".to_owned()
    } else if let Some(invalid) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        format!(
            "invalid character {invalid:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        )
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase ASCII letter".to_owned()
    } else if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        "must end with a lowercase ASCII letter or digit".to_owned()
    } else if name.contains("__") {
        "must not contain multiple consecutive underscores".to_owned()
    } else {
        return None;
    };
    Some(format!("{name:?}: {reason}"))
}

/// Resolves every application variable. A `required` variable without a value is an error.
pub fn resolve(
    declared: &BTreeMap<String, Variable>,
    env: &HashMap<String, String>,
) -> anyhow::Result<HashMap<String, String>> {
    let mut values = HashMap::new();
    for (name, var) in declared {
        if !valid_name(name) {
            bail!("invalid variable name {name:?}");
        }
        let from_env = env.get(&format!("SPIN_VARIABLE_{}", name.to_uppercase())).cloned();
        match from_env.or_else(|| var.default.clone()) {
            Some(value) => {
                values.insert(name.clone(), value);
            }
            None if var.required => {
                bail!("required variable {name:?} has no value (set SPIN_VARIABLE_{})", name.to_uppercase())
            }
            None => {}
        }
    }
    Ok(values)
}

/// Expands `{{ name }}` references in a component variable template.
pub fn expand(template: &str, values: &HashMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").with_context(|| format!("unclosed template in {template:?}"))?;
        let name = rest[start + 2..start + end].trim();
        let value = values.get(name).with_context(|| format!("template refers to undefined variable {name:?}"))?;
        out.push_str(value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeMap<String, Variable> {
        BTreeMap::from([
            ("a".to_owned(), Variable { default: Some("1".into()), ..Variable::default() }),
            ("secret_key".to_owned(), Variable { required: true, secret: true, ..Variable::default() }),
        ])
    }

    #[test]
    fn environment_overrides_defaults() {
        let env = HashMap::from([
            ("SPIN_VARIABLE_A".to_owned(), "2".to_owned()),
            ("SPIN_VARIABLE_SECRET_KEY".to_owned(), "s".to_owned()),
        ]);
        let values = resolve(&declared(), &env).unwrap();
        assert_eq!(values["a"], "2");
        assert_eq!(values["secret_key"], "s");
    }

    #[test]
    fn required_without_value_is_an_error_naming_it() {
        let err = resolve(&declared(), &HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("secret_key") && err.contains("SPIN_VARIABLE_SECRET_KEY"), "{err}");
    }

    #[test]
    fn expands_templates_with_surrounding_text() {
        let values = HashMap::from([("a".to_owned(), "x".to_owned())]);
        assert_eq!(expand("pre-{{ a }}-{{a}}", &values).unwrap(), "pre-x-x");
        assert!(expand("{{ b }}", &values).is_err());
        assert!(expand("{{ a ", &values).is_err());
    }

    #[test]
    fn validates_names() {
        assert!(valid_name("master_key"));
        assert!(!valid_name("Master") && !valid_name("1a") && !valid_name("a-b") && !valid_name(""));
    }
}
