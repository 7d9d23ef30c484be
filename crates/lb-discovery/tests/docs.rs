//! Every ```toml block in `docs/*.md` parses with the parser it documents.
//!
//! A block with a `kind = ...` line is a [`SourceConfig`]; a block with
//! `[[endpoints]]` is an endpoint file ([`parse_endpoints`]). Any other TOML
//! block fails this test until a checker for it is added here, so a new
//! example cannot slip in unchecked.

use std::path::{Path, PathBuf};

use lb_discovery::{FileFormat, SourceConfig, SourceConfigError, parse_endpoints};

/// One fenced code block of a Markdown file.
struct Block {
    /// The file, relative to the workspace root.
    file: String,
    /// The 1-based line of the opening fence.
    line: usize,
    /// The info string's first word (`toml` in ```` ```toml,ignore ````), lowercased.
    language: String,
    /// The contents, with the fence's indentation removed.
    text: String,
}

/// The fenced code blocks (``` or ~~~, any indentation) of a Markdown text.
fn fenced_blocks(file: &str, markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // (fence char, fence length, indentation, block) of the block being read.
    let mut open: Option<(char, usize, usize, Block)> = None;
    for (number, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let fence_len = fence_char.map_or(0, |c| trimmed.chars().take_while(|&x| x == c).count());
        match &mut open {
            Some((c, len, _, _))
                if fence_char == Some(*c) && fence_len >= *len && trimmed[fence_len..].trim().is_empty() =>
            {
                let (_, _, _, block) = open.take().expect("a block is open");
                blocks.push(block);
            }
            Some((_, _, block_indent, block)) => {
                let cut = line.len() - line.trim_start().len();
                block.text.push_str(&line[cut.min(*block_indent)..]);
                block.text.push('\n');
            }
            None if fence_len >= 3 => {
                let info = trimmed[fence_len..].trim();
                let language = info
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let block = Block { file: file.to_string(), line: number + 1, language, text: String::new() };
                open = Some((fence_char.expect("a fence"), fence_len, indent, block));
            }
            None => {}
        }
    }
    assert!(open.is_none(), "{file}: a code block is never closed");
    blocks
}

/// Checks one TOML block with the parser it documents; why it fails, if it does.
fn check(block: &Block) -> Result<&'static str, String> {
    let has_line = |pred: &dyn Fn(&str) -> bool| block.text.lines().any(|l| pred(l.trim()));
    if has_line(&|l| l.starts_with("kind =") || l.starts_with("kind=")) {
        let config: SourceConfig =
            toml::from_str(&block.text).map_err(|e| format!("not a SourceConfig: {e}"))?;
        // `build` also checks what serde cannot (`port` against `srv`); errors of
        // the environment (no such directory, no resolver) are not the doc's.
        if matches!(config, SourceConfig::Dns { .. }) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let built = runtime.block_on(async { config.build().map(drop) });
            if let Err(e @ (SourceConfigError::MissingPort(_) | SourceConfigError::PortWithSrv(_))) = built {
                return Err(format!("an invalid SourceConfig: {e}"));
            }
        }
        return Ok("SourceConfig");
    }
    if has_line(&|l| l == "[[endpoints]]") {
        let endpoints = parse_endpoints(&block.text, FileFormat::Toml)
            .map_err(|e| format!("not an endpoint file: {e}"))?;
        if endpoints.is_empty() {
            return Err("an endpoint file example with no endpoint".to_string());
        }
        return Ok("endpoint file");
    }
    Err("no checker knows this kind of TOML block: add one to crates/lb-discovery/tests/docs.rs \
         (or write the block as ```text if it is not meant to be valid)"
        .to_string())
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[test]
fn every_toml_block_in_the_docs_parses_with_the_parser_it_documents() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(docs_dir())
        .expect("the docs directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no Markdown file in {}", docs_dir().display());

    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for path in &files {
        let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
        let markdown = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for block in fenced_blocks(&name, &markdown).into_iter().filter(|b| b.language == "toml") {
            match check(&block) {
                Ok(parser) => checked.push(format!("{}:{} ({parser})", block.file, block.line)),
                Err(why) => failures.push(format!("{}:{}: the ```toml block: {why}", block.file, block.line)),
            }
        }
    }
    println!("checked:\n{}", checked.join("\n"));
    assert!(failures.is_empty(), "{} TOML block(s) in docs/ fail:\n{}", failures.len(), failures.join("\n"));
    // The docs do have TOML blocks (docs/discovery.md); finding none means the extraction broke.
    assert!(
        checked.iter().any(|c| c.contains("SourceConfig"))
            && checked.iter().any(|c| c.contains("endpoint file")),
        "expected SourceConfig and endpoint-file blocks in docs/, checked only: {checked:?}"
    );
}

#[test]
fn the_block_extraction_finds_fences_of_any_indentation_and_length() {
    let markdown = "text\n```toml\nkind = \"static\"\n```\n- item\n  ````toml,ignore\n  [[endpoints]]\n  ```\n  still inside\n  ````\n~~~json\n{}\n~~~\n";
    let blocks = fenced_blocks("x.md", markdown);
    let found: Vec<(usize, &str, &str)> =
        blocks.iter().map(|b| (b.line, b.language.as_str(), b.text.as_str())).collect();
    assert_eq!(
        found,
        [
            (2, "toml", "kind = \"static\"\n"),
            (6, "toml", "[[endpoints]]\n```\nstill inside\n"),
            (11, "json", "{}\n"),
        ]
    );
}

#[test]
fn a_toml_block_no_checker_knows_fails_with_its_place() {
    let block =
        Block { file: "docs/x.md".into(), line: 7, language: "toml".into(), text: "[global]\n".into() };
    let why = check(&block).unwrap_err();
    assert!(why.contains("no checker"), "{why}");
    let bad = Block { text: "kind = \"dns\"\nname = \"web.\"\n".into(), ..block };
    assert!(check(&bad).unwrap_err().contains("set `port`"), "a dns source without port or srv is refused");
}
