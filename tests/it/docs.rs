//! The documentation cannot drift from the code: the configuration page
//! is the settings reference rendered, every variable the code reads has
//! its row (and its line in `.env.example`), and every link between the
//! README and the book's pages leads to a file and heading that exist.
//! Needs no service.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use stripe_sync::config::reference;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONFIG_PAGE: &str = "docs/src/configuration.md";
const GENERATED_START: &str = "-->\n";
const GENERATED_END: &str = "<!-- end of generated table -->";

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The names our code reads from the environment: the string literal
/// handed to one of `Env`'s lookups or to `std::env::var`.
fn variables_read_by_the_code() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in ["src", "workers"] {
        rust_files(&Path::new(ROOT).join(dir), &mut files);
    }
    let lookups = [
        ".required(\"",
        ".parsed(\"",
        ".optional_parsed(\"",
        ".or(\"",
        ".get(\"",
        "env::var(\"",
    ];
    let mut names = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        // Lookups split over lines (`env.parsed(\n "NAME", …`) are joined.
        let source: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
        let source = source.replace("( \"", "(\"");
        for lookup in lookups {
            for (at, _) in source.match_indices(lookup) {
                let rest = &source[at + lookup.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                // Upper-case names only: `.get("IsDeleted")` reads a
                // Salesforce field, not the environment.
                if name.len() > 2 && rest[name.len()..].starts_with('"') {
                    names.insert(name);
                }
            }
        }
    }
    names
}

#[test]
fn every_variable_the_code_reads_has_its_row_and_every_row_is_read() {
    let read = variables_read_by_the_code();
    let documented: BTreeSet<String> = reference::names().map(str::to_owned).collect();
    let missing: Vec<&String> = read.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "read by the code without a row in src/config/reference.rs: {missing:?}"
    );
    let unread: Vec<&String> = documented
        .iter()
        .filter(|n| !read.contains(*n) && !reference::READ_ELSEWHERE.contains(&n.as_str()))
        .collect();
    assert!(
        unread.is_empty(),
        "documented in src/config/reference.rs but read by nothing: {unread:?}"
    );
    let example = read_env_example();
    let not_in_example: Vec<&String> = documented
        .iter()
        .filter(|n| !example.contains(n.as_str()))
        .collect();
    assert!(
        not_in_example.is_empty(),
        ".env.example lacks {not_in_example:?}"
    );
}

/// The variable names `.env.example` sets or shows commented out.
fn read_env_example() -> BTreeSet<String> {
    read(".env.example")
        .lines()
        .filter_map(|line| {
            let line = line.trim_start_matches('#').trim();
            let (name, _) = line.split_once('=')?;
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_owned())
        })
        .collect()
}

/// Between `<!-- generated from SOURCE …-->` and `<!-- end of generated
/// table -->`, `document` holds `rendered`; with `UPDATE_DOCS=1` set, it
/// is rewritten to.
fn holds_the_render(document: &str, source: &str, rendered: &str) {
    let page = read(document);
    let start = page
        .find(&format!("<!-- generated from {source}"))
        .and_then(|at| page[at..].find(GENERATED_START).map(|end| at + end))
        .map(|at| at + GENERATED_START.len())
        .unwrap_or_else(|| panic!("{document} has lost its generated table's opening marker"));
    let end = page[start..]
        .find(GENERATED_END)
        .map(|at| start + at)
        .unwrap_or_else(|| panic!("{document} has lost its generated table's closing marker"));
    if page[start..end] == *rendered {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{rendered}{}", &page[..start], &page[end..]);
        std::fs::write(Path::new(ROOT).join(document), updated).unwrap();
        return;
    }
    panic!(
        "{document} differs from {source} rendered; run \
         UPDATE_DOCS=1 cargo test --test it -- docs:: to rewrite it"
    );
}

/// The configuration page holds the whole reference as rendered, and the
/// README the variables a process cannot start without.
#[test]
fn the_configuration_tables_are_the_reference_rendered() {
    let source = "src/config/reference.rs";
    holds_the_render(CONFIG_PAGE, source, &reference::markdown());
    holds_the_render("README.md", source, &reference::required_markdown());
}

/// The mirror page's table of types is the registry rendered: every type,
/// its relations, how it stays current, its typed columns and deletes.
#[test]
fn the_mirror_page_s_table_is_the_registry_rendered() {
    holds_the_render(
        "docs/src/mirror.md",
        "src/registry/describe.rs",
        &stripe_sync::registry::markdown(),
    );
    holds_the_render(
        "README.md",
        "src/registry/describe.rs",
        &stripe_sync::registry::markdown_summary(),
    );
}

/// The OpenAPI document names every relation of the mirror the read
/// routes take, in registry order: each type's, then its child lists'.
#[test]
fn the_openapi_document_lists_every_relation_of_the_mirror() {
    let document: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    let want: Vec<&str> = stripe_sync::registry::RESOURCES
        .iter()
        .flat_map(|r| std::iter::once(r.relation).chain(r.children.iter().map(|c| c.relation)))
        .collect();
    for path in ["/api/stripe/{relation}", "/api/stripe/{relation}/{id}"] {
        let parameters = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no parameters"));
        let relation = parameters
            .iter()
            .find(|p| p["name"] == "relation")
            .unwrap_or_else(|| panic!("{path} has no relation parameter"));
        let listed: Vec<&str> = relation["schema"]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}'s relation lists no values"))
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        assert_eq!(
            listed, want,
            "{path}: docs/openapi.json's relation enum lists the registry's relations in order"
        );
    }
}

/// The HTTP API page opens with every route of the OpenAPI document: its
/// method, path, what it does and which token it takes.
#[test]
fn the_http_api_page_lists_every_route_of_the_openapi_document() {
    let document: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    let admin_only = |operation: &serde_json::Value| {
        operation["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("admin_bearer").is_some()))
    };
    let mut table = String::from("| route | what it does | token |\n|---|---|---|\n");
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let summary = operation["summary"].as_str().unwrap_or_default();
            let token = if operation["security"].as_array().is_some_and(Vec::is_empty) {
                "none"
            } else if admin_only(operation) || path.starts_with("/api/admin/") {
                "`ADMIN_TOKEN`"
            } else {
                "`API_TOKEN`"
            };
            table.push_str(&format!(
                "| `{} {path}` | {} | {token} |\n",
                method.to_uppercase(),
                summary.replace('|', "\\|")
            ));
        }
    }
    holds_the_render("docs/src/http-api.md", "docs/openapi.json", &table);
}

/// A heading's anchor as GitHub and mdBook make it: lower case, spaces to
/// hyphens, other punctuation dropped.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// The prose of a markdown file, fenced code blocks dropped.
fn prose(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    prose(markdown)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor_of(l.trim_start_matches('#')))
        .collect()
}

/// Every `](target)` of a markdown file's prose, outside inline code.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(markdown) {
        // Inline code spans may hold `](` that is no link.
        let text: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                found.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    found
}

/// The README, the book's pages and SUMMARY.md.
fn documents() -> Vec<String> {
    let mut docs = vec!["README.md".to_owned()];
    let mut stack = vec![Path::new(ROOT).join("docs/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let relative = path.strip_prefix(ROOT).unwrap();
                docs.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    docs.sort();
    docs
}

#[test]
fn every_link_between_the_documents_leads_to_a_file_and_heading_that_exist() {
    let docs = documents();
    let headings: HashMap<PathBuf, BTreeSet<String>> = docs
        .iter()
        .map(|d| (Path::new(ROOT).join(d), anchors(&read(d))))
        .collect();
    let mut broken = Vec::new();
    for doc in &docs {
        let here = Path::new(ROOT).join(doc);
        for link in links(&read(doc)) {
            if link.is_empty() || link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                here.clone()
            } else {
                here.parent().unwrap().join(file)
            };
            let Ok(target) = target.canonicalize() else {
                broken.push(format!("{doc}: {link} (no such file)"));
                continue;
            };
            if anchor.is_empty() {
                continue;
            }
            match headings.get(&target) {
                Some(known) if known.contains(anchor) => {}
                Some(_) => broken.push(format!("{doc}: {link} (no such heading)")),
                None => broken.push(format!("{doc}: {link} (anchor into a file not checked)")),
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_of_the_book_is_in_its_summary() {
    let summary = read("docs/src/SUMMARY.md");
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for doc in documents() {
        let Some(page) = doc.strip_prefix("docs/src/") else {
            continue;
        };
        if page != "SUMMARY.md" {
            assert!(listed.contains(page), "{doc} is not in docs/src/SUMMARY.md");
        }
    }
}
