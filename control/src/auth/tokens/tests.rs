use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bh-tokens-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn create(t: &mut Tokens, identity: &str, role: Role) -> (String, String) {
    let change = t
        .prepare_create(NewToken {
            identity: identity.into(),
            role,
            tiers: None,
            description: String::new(),
            expires_unix_ms: None,
        })
        .unwrap();
    let out = (change.record.id.clone(), change.secret.clone().unwrap());
    t.apply(change).unwrap();
    out
}

#[test]
fn the_bearer_scheme_is_matched_in_any_case() {
    for header in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
        assert_eq!(bearer(header), Some("abc"), "{header}");
    }
    for header in ["Basic abc", "Bearerabc", "Bearer", "abc"] {
        assert_eq!(bearer(header), None, "{header}");
    }
}

#[test]
fn first_start_creates_a_private_hashed_file_and_an_initial_secret() {
    let d = dir("first");
    let path = d.join("tokens");
    let (mut t, migrated) = Tokens::load_or_create(&path).unwrap();
    assert_eq!(migrated, 0);
    assert_eq!(mode(&path), 0o600);
    let initial = initial_secret_path(&path);
    assert_eq!(mode(&initial), 0o600);
    let secret = std::fs::read_to_string(&initial)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(secret.len(), 64);
    assert!(!std::fs::read_to_string(&path).unwrap().contains(&secret));
    let caller = t.authenticate(&secret).unwrap();
    assert_eq!(
        (caller.identity.as_str(), caller.role),
        ("admin", Role::Admin)
    );
    assert_eq!(t.authenticate("nope"), Err(Refusal::Unknown));
    // Rotation: the old secret stops working, the new one works after a reload, the initial file is gone.
    let change = t.prepare_rotate(&caller.token_id).unwrap();
    let new = change.secret.clone().unwrap();
    t.apply(change).unwrap();
    assert_eq!(t.authenticate(&secret), Err(Refusal::Unknown));
    assert!(!initial.exists());
    let (again, _) = Tokens::load_or_create(&path).unwrap();
    assert_eq!(again.authenticate(&new).unwrap().token_id, caller.token_id);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        Tokens::load_or_create(&path),
        Err(TokenError::Permissions { .. })
    ));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_old_format_migrates_to_admin_tokens_with_the_same_secrets() {
    let d = dir("migrate");
    let path = d.join("tokens");
    let old = "# tokens\nadmin 0123456789abcdef0123456789abcdef\nci  ci-secret-at-least-16\n";
    write_private(&path, old).unwrap();
    let (t, migrated) = Tokens::load_or_create(&path).unwrap();
    assert_eq!(migrated, 2);
    for (who, secret) in [
        ("admin", "0123456789abcdef0123456789abcdef"),
        ("ci", "ci-secret-at-least-16"),
    ] {
        let c = t.authenticate(secret).unwrap();
        assert_eq!((c.identity.as_str(), c.role), (who, Role::Admin));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(FORMAT), "{text}");
    assert!(!text.contains("0123456789abcdef0123456789abcdef"));
    assert!(!text.contains("ci-secret-at-least-16"));
    assert_eq!(mode(&path), 0o600);
    assert!(!initial_secret_path(&path).exists());
    // Loaded again: the new format, nothing more to migrate.
    let (t, migrated) = Tokens::load_or_create(&path).unwrap();
    assert_eq!(migrated, 0);
    assert!(t.authenticate("ci-secret-at-least-16").is_ok());
    // A bad old line is named, and the file left as it was.
    write_private(&path, "admin short\n").unwrap();
    let e = Tokens::load_or_create(&path).err().unwrap().to_string();
    assert!(e.contains("line 1") && e.contains("16"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "admin short\n");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn revoked_and_expired_tokens_are_refused_and_the_last_admin_stays() {
    let d = dir("revoke");
    let path = d.join("tokens");
    let (mut t, _) = Tokens::load_or_create(&path).unwrap();
    let admin = t.list()[0].id.clone();
    assert!(matches!(
        t.prepare_revoke(&admin),
        Err(TokenError::LastAdmin(_))
    ));
    let (viewer, secret) = create(&mut t, "alice", Role::Viewer);
    assert_eq!(t.authenticate(&secret).unwrap().role, Role::Viewer);
    let change = t.prepare_revoke(&viewer).unwrap();
    t.apply(change).unwrap();
    assert_eq!(t.authenticate(&secret), Err(Refusal::Revoked));
    assert!(matches!(
        t.prepare_rotate(&viewer),
        Err(TokenError::Revoked(_))
    ));
    // A second admin makes the first revocable.
    let (_, second) = create(&mut t, "root2", Role::Admin);
    let change = t.prepare_revoke(&admin).unwrap();
    t.apply(change).unwrap();
    assert!(t.authenticate(&second).is_ok());
    // Expiry: in the past is refused at creation; a token whose time has passed is refused.
    let past = NewToken {
        identity: "bob".into(),
        role: Role::Operator,
        tiers: None,
        description: String::new(),
        expires_unix_ms: Some(1),
    };
    assert!(matches!(
        t.prepare_create(past.clone()),
        Err(TokenError::Invalid {
            field: "expires_at",
            ..
        })
    ));
    let soon = NewToken {
        expires_unix_ms: Some(now_ms() + 50),
        ..past
    };
    let change = t.prepare_create(soon).unwrap();
    let secret = change.secret.clone().unwrap();
    t.apply(change).unwrap();
    assert_eq!(t.authenticate(&secret).unwrap().identity, "bob");
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(t.authenticate(&secret), Err(Refusal::Expired));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn identities_and_descriptions_are_bounded_and_printable() {
    assert!(check_identity("ci-bot@example.org").is_ok());
    for bad in ["", "two words", "tab\there", "é", &"x".repeat(65)] {
        assert!(check_identity(bad).is_err(), "{bad:?}");
    }
    assert!(check_description("Grafana, read-only — café").is_ok());
    assert!(check_description("line\nbreak").is_err());
    assert!(check_description(&"x".repeat(201)).is_err());
}

#[test]
fn last_use_is_kept_in_memory_and_written_by_a_flush() {
    let d = dir("lastuse");
    let path = d.join("tokens");
    let (t, _) = Tokens::load_or_create(&path).unwrap();
    let secret = std::fs::read_to_string(initial_secret_path(&path)).unwrap();
    assert!(!t.flush_last_use().unwrap(), "nothing used yet");
    let before = std::fs::read_to_string(&path).unwrap();
    t.authenticate(secret.trim()).unwrap();
    assert!(t.list()[0].last_used_unix_ms.is_some());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "no write per use"
    );
    assert!(t.flush_last_use().unwrap());
    assert!(!t.flush_last_use().unwrap());
    let (again, _) = Tokens::load_or_create(&path).unwrap();
    assert_eq!(
        again.list()[0].last_used_unix_ms,
        t.list()[0].last_used_unix_ms
    );
    let _ = std::fs::remove_dir_all(&d);
}
