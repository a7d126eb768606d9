use super::*;

/// Writes `text` as `zeoraid.toml` in a fresh directory and loads it.
fn load(text: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("zeoraid.toml");
    std::fs::write(&file, text).expect("write config");
    let r = Config::load(&file);
    (dir, r)
}

/// Loads `text`, expects an error, and checks that it names the file, `line` and `key`.
fn expect_err(text: &str, line: usize, key: &str, needle: &str) -> String {
    let (_dir, r) = load(text);
    let err = r.expect_err("the configuration must be refused");
    let msg = err.to_string();
    match &err {
        ConfigError::Invalid { file, line: l, key: k, .. } => {
            assert!(file.ends_with("zeoraid.toml"), "{msg}");
            assert_eq!((*l, k.as_str()), (line, key), "{msg}");
        }
        other => panic!("not an Invalid error: {other:?}"),
    }
    assert!(msg.contains(&format!("zeoraid.toml:{line}:")), "{msg}");
    assert!(msg.contains(key), "{msg}");
    assert!(msg.contains(needle), "{msg} lacks {needle:?}");
    msg
}

const STORAGE: &str = "[[storage]]\nname = \"1\"\npath = \"var/Data.fs\"\n";

#[test]
fn a_full_file_is_read_with_paths_relative_to_its_directory() {
    let text = "[server]\nlisten = [\"127.0.0.1:9100\", \"[::1]:9101\", \"unix:/tmp/z.sock\"]\n\
                encoding = \"msgpack\"\nread_only = false\ntransaction_timeout = 2.5\n\
                invalidation_queue_size = 7\nmax_frame = 65536\nshutdown_grace = 0\n\n\
                [[storage]]\nname = \"main\"\npath = \"var/Data.fs\"\nblob_dir = \"var/blobs\"\n\
                fsync = false\nread_threads = 2\n\n[[storage]]\nname = \"other\"\npath = \"/abs/o.fs\"\n";
    let (dir, r) = load(text);
    let c = r.expect("valid");
    let s = &c.server;
    assert_eq!(s.listen.len(), 3);
    assert_eq!(s.listen[2], ListenAddr::Unix(PathBuf::from("/tmp/z.sock")));
    assert_eq!(s.encoding, Encoding::Msgpack);
    assert_eq!(s.transaction_timeout, Some(Duration::from_millis(2500)));
    assert_eq!((s.invalidation_queue_size, s.max_frame), (7, 65536));
    assert_eq!(s.shutdown_grace, Duration::ZERO);
    assert_eq!(c.storages[0].path, dir.path().join("var/Data.fs"));
    assert_eq!(c.storages[0].blob_dir, Some(dir.path().join("var/blobs")));
    assert_eq!((c.storages[0].fsync, c.storages[0].read_threads), (false, 2));
    assert_eq!(c.storages[1].path, PathBuf::from("/abs/o.fs"));
    assert_eq!((c.storages[1].blob_dir.as_ref(), c.storages[1].read_threads), (None, DEFAULT_READ_THREADS));
    let cfg = c.server_config(Vec::new());
    assert_eq!((cfg.announce, cfg.max_frame, cfg.invalidation_queue_size), (Encoding::Msgpack, 65536, 7));
    assert!(c.summary().contains("storage \"main\""));
}

#[test]
fn server_table_is_optional_and_defaults_apply() {
    let (_d, r) = load(STORAGE);
    let c = r.expect("valid");
    assert_eq!(c.server, ServerSettings::default());
    assert_eq!(c.server.listen[0].to_string(), DEFAULT_LISTEN);
    assert!(c.storages[0].fsync);
}

#[test]
fn unknown_key_is_named_with_its_line() {
    expect_err("[server]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n", 3, "server.lisen", "unknown field");
    expect_err(&format!("{STORAGE}fsynk = true\n"), 4, "storage.fsynk", "unknown field");
}

#[test]
fn unknown_table_is_named() {
    expect_err(&format!("{STORAGE}\n[servr]\nlisten = []\n"), 5, "servr", "unknown field");
}

#[test]
fn bad_listen_address_is_named() {
    let msg = expect_err(
        &format!("[server]\nlisten = [\n  \"127.0.0.1:8100\",\n  \"localhost:8100\",\n]\n{STORAGE}"),
        4,
        "server.listen",
        "localhost:8100",
    );
    assert!(msg.contains(":4:3:"), "column of the bad element: {msg}");
    expect_err(&format!("[server]\nlisten = [\"unix:\"]\n{STORAGE}"), 2, "server.listen", "unix:PATH");
    expect_err(&format!("[server]\nlisten = []\n{STORAGE}"), 2, "server.listen", "at least one");
    expect_err(
        &format!("[server]\nlisten = [\"1.2.3.4:5\", \"1.2.3.4:5\"]\n{STORAGE}"),
        2,
        "server.listen",
        "twice",
    );
}

#[test]
fn wrong_types_and_values_are_named() {
    expect_err(&format!("[server]\nread_only = \"yes\"\n{STORAGE}"), 2, "server.read_only", "invalid type");
    expect_err(&format!("[server]\nencoding = \"json\"\n{STORAGE}"), 2, "server.encoding", "unknown variant");
    expect_err(
        &format!("[server]\ntransaction_timeout = 0\n{STORAGE}"),
        2,
        "server.transaction_timeout",
        "seconds",
    );
    expect_err(
        &format!("[server]\ntransaction_timeout = -1.5\n{STORAGE}"),
        2,
        "server.transaction_timeout",
        "seconds",
    );
    expect_err(&format!("[server]\nshutdown_grace = nan\n{STORAGE}"), 2, "server.shutdown_grace", "seconds");
    expect_err(
        &format!("[server]\ninvalidation_queue_size = 0\n{STORAGE}"),
        2,
        "server.invalidation_queue_size",
        "between",
    );
    expect_err(&format!("[server]\nmax_frame = 5000000000\n{STORAGE}"), 2, "server.max_frame", "between");
    expect_err(&format!("[server]\nmax_frame = 10\n{STORAGE}"), 2, "server.max_frame", "between");
    expect_err(&format!("{STORAGE}read_threads = 0\n"), 4, "storage.read_threads", "between");
    expect_err(&format!("{STORAGE}fsync = 1\n"), 4, "storage.fsync", "invalid type");
}

#[test]
fn toml_syntax_error_is_located() {
    expect_err("[server]\nlisten = [\"a\"\n", 3, "server.listen", "expected `]`");
    let (_d, r) = load("[server\n");
    let msg = r.expect_err("malformed").to_string();
    assert!(msg.contains("zeoraid.toml:1:"), "{msg}");
}

#[test]
fn storages_are_required_named_and_unique() {
    expect_err("[server]\nread_only = true\n", 1, "storage", "at least one [[storage]]");
    expect_err("[[storage]]\npath = \"a.fs\"\n", 1, "storage", "missing field `name`");
    expect_err("[[storage]]\nname = \"1\"\n", 1, "storage", "missing field `path`");
    expect_err("[[storage]]\nname = \"\"\npath = \"a.fs\"\n", 2, "storage.name", "must not be empty");
    let msg = expect_err(
        "[[storage]]\nname = \"1\"\npath = \"a.fs\"\n\n[[storage]]\nname = \"1\"\npath = \"b.fs\"\n",
        6,
        "storage.name",
        "already used",
    );
    assert!(msg.contains("line 2"), "{msg}");
    expect_err(
        "[[storage]]\nname = \"1\"\npath = \"a.fs\"\n\n[[storage]]\nname = \"2\"\npath = \"a.fs\"\n",
        7,
        "storage.path",
        "already served",
    );
}

#[test]
fn paths_must_be_usable() {
    // The parent is a regular file: cannot be created.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("plain"), b"x").expect("write");
    let file = dir.path().join("zeoraid.toml");
    std::fs::write(&file, "[[storage]]\nname = \"1\"\npath = \"plain/sub/Data.fs\"\n").expect("write");
    let msg = Config::load(&file).expect_err("refused").to_string();
    assert!(
        msg.contains("zeoraid.toml:3:") && msg.contains("storage.path") && msg.contains("not a directory"),
        "{msg}"
    );

    // path names a directory.
    std::fs::create_dir(dir.path().join("d")).expect("mkdir");
    std::fs::write(&file, "[[storage]]\nname = \"1\"\npath = \"d\"\n").expect("write");
    let msg = Config::load(&file).expect_err("refused").to_string();
    assert!(msg.contains(":3:") && msg.contains("is a directory"), "{msg}");

    // A read-only storage must exist.
    std::fs::write(&file, "[[storage]]\nname = \"1\"\npath = \"nope.fs\"\nread_only = true\n")
        .expect("write");
    let msg = Config::load(&file).expect_err("refused").to_string();
    assert!(msg.contains(":3:") && msg.contains("storage.path") && msg.contains("does not exist"), "{msg}");

    // blob_dir that is a file.
    std::fs::write(&file, "[[storage]]\nname = \"1\"\npath = \"a.fs\"\nblob_dir = \"plain\"\n")
        .expect("write");
    let msg = Config::load(&file).expect_err("refused").to_string();
    assert!(
        msg.contains(":4:") && msg.contains("storage.blob_dir") && msg.contains("not a directory"),
        "{msg}"
    );

    // Empty path.
    std::fs::write(&file, "[[storage]]\nname = \"1\"\npath = \"\"\n").expect("write");
    let msg = Config::load(&file).expect_err("refused").to_string();
    assert!(msg.contains(":3:") && msg.contains("must not be empty"), "{msg}");

    // Missing directories that can be created are fine, and create_dirs makes them.
    std::fs::write(&file, "[[storage]]\nname = \"1\"\npath = \"x/y/Data.fs\"\nblob_dir = \"x/b\"\n")
        .expect("write");
    let c = Config::load(&file).expect("valid");
    c.create_dirs().expect("create");
    assert!(dir.path().join("x/y").is_dir() && dir.path().join("x/b").is_dir());
}

#[test]
fn unreadable_file_names_the_file() {
    let err = Config::load(Path::new("/nonexistent/zeoraid.toml")).expect_err("missing");
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(msg.contains("/nonexistent/zeoraid.toml"), "{msg}");
}

#[test]
fn listen_addresses_parse_and_print() {
    for s in ["127.0.0.1:8100", "[::1]:8100", "0.0.0.0:0", "unix:/run/z.sock", "unix:rel.sock"] {
        let a: ListenAddr = s.parse().expect(s);
        assert_eq!(a.to_string(), s);
    }
    for s in ["", "8100", "localhost:8100", "127.0.0.1", "unix:", "127.0.0.1:99999", "tcp://1.2.3.4:5"] {
        assert!(s.parse::<ListenAddr>().is_err(), "{s:?} must not parse");
    }
}

#[test]
fn defaults_and_overrides() {
    let mut c = Config::defaults(Path::new("var"));
    assert_eq!(c.storages[0].name, "1");
    assert_eq!(c.storages[0].path, PathBuf::from("var/Data.fs"));
    assert_eq!(c.storages[0].blob_dir, Some(PathBuf::from("var/blobs")));
    assert_eq!(c.server.listen, vec![DEFAULT_LISTEN.parse().expect("default")]);

    let a: ListenAddr = "127.0.0.1:1".parse().expect("addr");
    let b: ListenAddr = "unix:/tmp/x".parse().expect("addr");
    c.override_listen(vec![a.clone(), b.clone()]).expect("listen");
    assert_eq!(c.server.listen, vec![a.clone(), b]);
    c.override_listen(Vec::new()).expect("no-op");
    assert_eq!(c.server.listen.len(), 2);
    let err = c.override_listen(vec![a.clone(), a]).expect_err("twice").to_string();
    assert!(err.starts_with("--listen:") && err.contains("twice"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    c.override_data(&dir.path().join("d")).expect("data");
    assert_eq!(c.storages[0].path, dir.path().join("d/Data.fs"));
    assert_eq!(c.storages[0].blob_dir, Some(dir.path().join("d/blobs")));

    std::fs::write(dir.path().join("f"), b"x").expect("write");
    let err = c.override_data(&dir.path().join("f")).expect_err("a file").to_string();
    assert!(err.starts_with("--data:") && err.contains("not a directory"), "{err}");

    c.storages.push(c.storages[0].clone());
    let err = c.override_data(dir.path()).expect_err("two storages").to_string();
    assert!(err.starts_with("--data:") && err.contains("2 storages"), "{err}");
}

#[test]
fn server_read_only_makes_every_storage_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.fs"), b"").expect("write");
    let file = dir.path().join("zeoraid.toml");
    std::fs::write(&file, "[server]\nread_only = true\n[[storage]]\nname = \"1\"\npath = \"a.fs\"\n")
        .expect("write");
    let c = Config::load(&file).expect("valid");
    assert!(c.storages[0].read_only);
    assert!(c.storages[0].local_config().read_only);
}

#[test]
fn max_output_has_a_floor_and_a_default() {
    let text = "[server]\nmax_output = 1000\n[[storage]]\nname = \"1\"\npath = \"a.fs\"\n";
    expect_err(text, 2, "server.max_output", "below");
    let (_d, c) = load("[server]\nmax_output = 1048576\n[[storage]]\nname = \"1\"\npath = \"a.fs\"\n");
    assert_eq!(c.expect("valid").server.max_output, 1 << 20);
    let (_d, c) = load("[[storage]]\nname = \"1\"\npath = \"a.fs\"\n");
    assert_eq!(c.expect("valid").server.max_output, DEFAULT_MAX_OUTPUT);
}
