//! State files written by release 0.1.0 (`tests/fixtures/state-0.1.0/`: taken from real runs
//! against the sandbox — an import, a rotation with a queued retirement, a failed check)
//! stay readable by every later version, through the same state store `rotate` uses, and
//! keep their meaning: a change of the state's types must keep these names.

use certrot::state::{CommitSource, RetireReason, RotationResult, StateStore, Step};
use std::path::Path;

fn store_with(name: &str) -> (tempfile::TempDir, StateStore, String) {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/state-0.1.0")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&fixture).unwrap();
    let credential = serde_json::from_str::<serde_json::Value>(&text).unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(state_dir.join(format!("{credential}.json")), &text).unwrap();
    (dir, StateStore::new(&state_dir), credential)
}

#[test]
fn a_rotated_credentials_state_from_0_1_0_loads_with_its_meaning() {
    let (_dir, store, name) = store_with("rotated");
    let loaded = store.load(&name, false).unwrap();
    let st = loaded.state;
    let cur = st.current.as_ref().unwrap();
    assert_eq!(cur.source, CommitSource::Rotate);
    assert_eq!(
        cur.binding_id.as_deref(),
        Some("249c8c3a-522a-f596-e34c-4b4a9899c72f")
    );
    let last = st.last_rotation.as_ref().unwrap();
    assert_eq!(last.result, RotationResult::Success);
    assert_eq!(st.retiring.len(), 1);
    assert_eq!(st.retiring[0].reason, RetireReason::Replaced);
    assert_eq!(st.retiring[0].service_manager, "sandbox");
    assert_eq!(st.installation.as_deref(), Some("i7ccbd75d0e46b5b5"));
    // Written back, it is the same JSON: every name (source, result, reason) is kept.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-0.1.0/rotated.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(serde_json::to_value(&st).unwrap(), fixture);
    // Written back and read again, nothing changes.
    let again: certrot::state::State =
        serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
    assert_eq!(again, st);
}

#[test]
fn an_imported_and_a_failed_state_from_0_1_0_load_with_their_meaning() {
    let (_d1, store, name) = store_with("imported");
    let st = store.load(&name, false).unwrap().state;
    let same_json = |name: &str, st: &certrot::state::State| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/state-0.1.0/{name}.json"));
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(st).unwrap(), fixture, "{name}");
    };
    same_json("imported", &st);
    assert_eq!(st.current.as_ref().unwrap().source, CommitSource::Import);
    assert_eq!(st.current.as_ref().unwrap().binding_id, None);

    let (_d2, store, name) = store_with("failed");
    let st = store.load(&name, false).unwrap().state;
    assert!(st.current.is_none());
    let last = st.last_rotation.as_ref().unwrap();
    assert_eq!(last.result, RotationResult::Failure);
    assert_eq!(last.step, Some(Step::Check));
    assert_eq!(last.label.as_deref(), Some("unauthorized"));
    assert_eq!(st.consecutive_failures, 1);
    assert!(st.next_attempt.is_some());
    same_json("failed", &st);
}
