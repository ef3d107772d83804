//! Loading YAML configuration: `${ENV}` expansion, strict fields, errors that name the place.
//!
//! Every daemon and the CLI load their files through [`load`]: the text is expanded
//! (`${NAME}`, or `${NAME:-default}`; an unset variable without a default is an error naming
//! it and its line), parsed with unknown fields refused, and the first problem is reported with
//! the file, the line and the dotted field path.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::json;
use uni_wizard::{Error, ErrorCode};

/// Expands `${NAME}` and `${NAME:-default}` from `lookup`. `$$` stands for a literal `$`.
/// Whole-line comments (first non-blank character `#`) are copied as they are.
///
/// # Errors
/// E4001 naming the variable and its line when it is unset and has no default, or when a
/// `${` is not closed.
pub fn expand(text: &str, file: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            // Whole-line comments are left alone, so examples can mention `${NAME}`.
            out.push_str(line);
        } else {
            expand_line(line, &mut out, file, i + 1, lookup)?;
        }
    }
    Ok(out)
}

fn expand_line(
    line: &str,
    out: &mut String,
    file: &str,
    line_no: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Error> {
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(config_error(file, line_no, "", "`${` is not closed on this line"));
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(config_error(file, line_no, "", &format!("`${{{expr}}}` is not a valid variable name")));
            }
            match lookup(name).or_else(|| default.map(str::to_owned)) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(config_error(
                        file,
                        line_no,
                        "",
                        &format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"),
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(())
}

fn config_error(file: &str, line: usize, field: &str, problem: &str) -> Error {
    let place = if field.is_empty() { format!("{file}:{line}") } else { format!("{file}:{line}: field `{field}`") };
    Error::new(ErrorCode::ConfigInvalid, format!("{place}: {problem}"))
        .with_details(json!({ "file": file, "line": line, "field": field, "problem": problem }))
}

/// Parses YAML text (already expanded) into `T`, naming the field and line of the first error.
///
/// # Errors
/// E4001 with file, line and dotted field path.
pub fn parse<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, Error> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = e.into_inner();
        let line = inner.location().map_or(0, |l| l.line());
        let mut problem = inner.to_string();
        // yaml_serde appends " at line L column C"; the location is reported separately.
        if let Some(i) = problem.find(" at line ") {
            problem.truncate(i);
        }
        config_error(file, line, &field, &problem)
    })
}

/// The largest config file read (the fleet's largest is a few KiB): a bigger one is refused
/// before it is parsed, so a runaway file cannot stall a reload or fill memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A config file's text, refused (`InvalidData`) above [`MAX_CONFIG_BYTES`].
pub fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB, the most a config file may be", MAX_CONFIG_BYTES / 1024),
        ));
    }
    Ok(text)
}

/// Reads, expands and parses a YAML file, using the process environment.
///
/// # Errors
/// E4001 for unreadable or oversized files, unset variables and invalid content, naming file
/// and line.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let file = path.display().to_string();
    let text = read_bounded(path).map_err(|e| config_error(&file, 0, "", &format!("cannot read: {e}")))?;
    let expanded = expand(&text, &file, &|name| std::env::var(name).ok())?;
    parse(&expanded, &file)
}

/// Loads the library config from a file and validates it.
///
/// # Errors
/// As [`load`], plus the library's own validation (E4001 naming the field).
pub fn load_library(path: &Path) -> Result<uni_wizard::Config, Error> {
    let config: uni_wizard::Config = load(path)?;
    config.validate().map_err(|e| {
        let field = e.details["field"].as_str().unwrap_or("").to_owned();
        Error::new(ErrorCode::ConfigInvalid, format!("{}: {}", path.display(), e.message))
            .with_details(json!({ "file": path.display().to_string(), "field": field }))
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    }

    /// Proves `${VAR}`, `${VAR:-default}` and `$$` expand, and an unset variable names its line.
    #[test]
    fn expansion_and_its_errors() {
        let t =
            expand("a: ${TOKEN}\nb: ${MISSING:-x}\nc: $$5\n  # ${NOT_EXPANDED}\n", "f.yaml", &env).expect("expands");
        assert_eq!(t, "a: s3cret\nb: x\nc: $5\n  # ${NOT_EXPANDED}\n");
        let e = expand("a: 1\nb: ${MISSING}\n", "f.yaml", &env).expect_err("unset");
        assert_eq!((e.code, e.details["line"].as_u64()), (ErrorCode::ConfigInvalid, Some(2)));
        assert!(e.message.contains("MISSING"), "{}", e.message);
    }

    /// Proves a bad value and an unknown field are reported with file, line and field path.
    #[test]
    fn parse_errors_name_file_line_and_field() {
        let e = parse::<uni_wizard::Config>("executor:\n  limit:\n    max_concurrency: lots\n", "c.yaml")
            .expect_err("bad type");
        assert_eq!(e.details["field"], "executor.limit.max_concurrency");
        assert_eq!(e.details["line"], 3);
        assert!(e.message.starts_with("c.yaml:3: field `executor.limit.max_concurrency`"), "{}", e.message);
        let e = parse::<uni_wizard::Config>("file_roots: []\nfile_root: /x\n", "c.yaml").expect_err("unknown");
        assert_eq!(e.details["line"], 2);
        assert!(e.message.contains("file_root"), "{}", e.message);
    }

    /// Proves a config file above the bound is refused (E4001 naming the file) before it is
    /// parsed, while one at the bound is read; a 200 MB file stalled a reload for 20 s in the
    /// outside trial.
    #[test]
    fn an_oversized_config_file_is_refused_unparsed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("node.yaml");
        let mut text = "file_roots: []\n".to_owned();
        text.push_str(&"#".repeat(MAX_CONFIG_BYTES as usize - text.len() - 1));
        text.push('\n');
        std::fs::write(&path, &text).expect("write");
        load_library(&path).expect("a file of exactly the bound is read");
        text.push_str("# one byte too many\n");
        std::fs::write(&path, &text).expect("write");
        let e = load_library(&path).expect_err("refused");
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert!(e.message.contains("node.yaml") && e.message.contains("larger than 1024 KiB"), "{}", e.message);
    }
}
