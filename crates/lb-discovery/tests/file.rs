//! The file source against a real directory watched through `notify`.

use std::path::Path;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lb_core::{Change, Endpoint};
use lb_discovery::{ChangeStream, FileError, FileSource, Source, changes};

const WAIT: Duration = Duration::from_secs(5);

/// Writes the file the way deploy tools do: a temporary file renamed over it.
fn replace(path: &Path, text: &str) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

fn entry(address: &str, weight: u32) -> String {
    format!("[[endpoints]]\naddress = \"{address}\"\nweight = {weight}\n\n")
}

fn ep(address: &str, weight: u32) -> Endpoint {
    Endpoint::new(address.parse::<lb_core::Address>().unwrap()).with_weight(weight)
}

/// The next batch of changes: waits (bounded) for one, then takes those already queued with it.
async fn next_batch(stream: &mut ChangeStream) -> Vec<Change> {
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the timeout")
        .expect("the stream goes on");
    let mut batch = vec![first];
    while let Some(Some(change)) = stream.next().now_or_never() {
        batch.push(change);
    }
    batch
}

#[tokio::test]
async fn edits_become_diffs_and_bad_files_keep_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.toml");
    std::fs::write(&path, entry("10.0.0.1:80", 1) + &entry("10.0.0.2:80", 1)).unwrap();
    let mut stream = changes(FileSource::new(&path).unwrap().with_debounce(Duration::from_millis(20)));

    assert_eq!(
        next_batch(&mut stream).await,
        [Change::Snapshot(vec![ep("10.0.0.1:80", 1), ep("10.0.0.2:80", 1)])]
    );

    replace(&path, &(entry("10.0.0.2:80", 5) + &entry("10.0.0.3:80", 1)));
    assert_eq!(
        next_batch(&mut stream).await,
        [
            Change::Remove(ep("10.0.0.1:80", 1).id().clone()),
            Change::Update(ep("10.0.0.2:80", 5)),
            Change::Add(ep("10.0.0.3:80", 1)),
        ]
    );

    // A half-written file, then a deleted one: both rejected, nothing emitted.
    std::fs::write(&path, "[[endpoints]]\naddress = \"10.0.0.9:80\"\nweight = ").unwrap();
    std::fs::remove_file(&path).unwrap();
    // The next good file is diffed against the last good set, not against an empty one.
    replace(&path, &(entry("10.0.0.2:80", 5) + &entry("10.0.0.3:80", 1) + &entry("10.0.0.4:80", 2)));
    assert_eq!(next_batch(&mut stream).await, [Change::Add(ep("10.0.0.4:80", 2))]);

    // Only an explicit empty list empties the set.
    replace(&path, "endpoints = []\n");
    let removed = next_batch(&mut stream).await;
    assert_eq!(removed.len(), 3);
    assert!(removed.iter().all(|c| matches!(c, Change::Remove(_))), "{removed:?}");
}

#[tokio::test]
async fn a_bad_file_is_reported_with_path_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.json");
    std::fs::write(&path, "{\"endpoints\": [\n  {\"address\": \"10.0.0.1\"}\n]}").unwrap();
    let mut source = FileSource::new(&path).unwrap();
    let err = source.next_list().await.expect("a round").unwrap_err();
    assert!(matches!(err, FileError::Parse { line: 2, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}:2:", path.display())), "{text}");
    assert!(text.contains("`10.0.0.1` has no port"), "{text}");

    // The fix is picked up by the next round, which waits for the change event.
    replace(&path, "{\"endpoints\": [{\"address\": \"10.0.0.1:80\"}]}");
    let fixed = tokio::time::timeout(WAIT, source.next_list()).await.unwrap().unwrap().unwrap();
    assert_eq!(fixed, [ep("10.0.0.1:80", 1)]);
}

#[tokio::test]
async fn a_missing_file_is_an_error_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.toml");
    let mut stream = changes(FileSource::new(&path).unwrap().with_debounce(Duration::from_millis(20)));
    let mut first = Box::pin(next_batch(&mut stream));
    assert!((&mut first).now_or_never().is_none(), "nothing is emitted while the file is missing");
    replace(&path, &entry("10.0.0.7:80", 1));
    assert_eq!(first.await, [Change::Snapshot(vec![ep("10.0.0.7:80", 1)])]);
}

#[test]
fn unknown_extensions_and_missing_directories_are_refused() {
    let err = FileSource::new("/tmp/endpoints.yaml").unwrap_err();
    assert!(matches!(err, FileError::UnknownFormat { .. }), "{err}");
    let err = FileSource::new("/nonexistent-lb-dir/web.toml").unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent-lb-dir/web.toml: cannot watch"), "{err}");
}
