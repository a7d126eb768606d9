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

/// The first backend's local settings.
fn local(s: &StorageSettings) -> &LocalSettings {
    s.backends[0].local().expect("a local backend")
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
    assert_eq!(local(&c.storages[0]).path, dir.path().join("var/Data.fs"));
    assert_eq!(local(&c.storages[0]).blob_dir, Some(dir.path().join("var/blobs")));
    assert_eq!((local(&c.storages[0]).fsync, local(&c.storages[0]).read_threads), (false, 2));
    assert_eq!(local(&c.storages[1]).path, PathBuf::from("/abs/o.fs"));
    assert_eq!(
        (local(&c.storages[1]).blob_dir.as_ref(), local(&c.storages[1]).read_threads),
        (None, DEFAULT_READ_THREADS)
    );
    let cfg = c.server_config(Vec::new());
    assert_eq!((cfg.announce, cfg.max_frame, cfg.invalidation_queue_size), (Encoding::Msgpack, 65536, 7));
    assert!(c.summary().contains("storage \"main\""));
}

#[test]
fn server_table_is_optional_and_defaults_apply() {
    let (d, r) = load(STORAGE);
    let c = r.expect("valid");
    assert_eq!(c.server, ServerSettings { admin: d.path().join("admin.sock"), ..ServerSettings::default() });
    assert_eq!(c.server.listen[0].to_string(), DEFAULT_LISTEN);
    assert!(local(&c.storages[0]).fsync);
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
    expect_err("[[storage]]\nname = \"1\"\n", 2, "storage", "missing field `path`");
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
        "already served as storage \"1\" backend \"local\" (line 3)",
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
fn defaults_are_a_raid_of_two_local_backends_and_overrides_apply() {
    let mut c = Config::defaults(Path::new("var"));
    let s = &c.storages[0];
    assert_eq!((s.name.as_str(), s.state_file.as_path()), ("1", Path::new("var/1.raid-state")));
    let names: Vec<&str> = s.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let b = s.backends[1].local().expect("local");
    assert_eq!(
        (b.path.as_path(), b.blob_dir.as_deref()),
        (Path::new("var/b/Data.fs"), Some(Path::new("var/b/blobs")))
    );
    assert_eq!(c.server.admin, PathBuf::from("var/admin.sock"));
    assert_eq!(c.server.listen, vec![DEFAULT_LISTEN.parse().expect("default")]);

    let a: ListenAddr = "127.0.0.1:1".parse().expect("addr");
    let b: ListenAddr = "unix:/tmp/x".parse().expect("addr");
    c.override_listen(vec![a.clone(), b.clone()]).expect("listen");
    assert_eq!(c.server.listen, vec![a.clone(), b]);
    c.override_listen(Vec::new()).expect("no-op");
    assert_eq!(c.server.listen.len(), 2);
    let err = c.override_listen(vec![a.clone(), a]).expect_err("twice").to_string();
    assert!(err.starts_with("--listen:") && err.contains("twice"), "{err}");

    // --data relocates a single local storage only.
    let err = c.override_data(Path::new("d")).expect_err("two backends").to_string();
    assert!(err.starts_with("--data:") && err.contains("2 backends"), "{err}");
    let (dir, r) = load("[[storage]]\nname = \"1\"\npath = \"x/Data.fs\"\nblob_dir = \"x/blobs\"\n");
    let mut c = r.expect("valid");
    assert_eq!(c.storages[0].state_file, dir.path().join("x/1.raid-state"));
    c.override_data(&dir.path().join("d")).expect("data");
    assert_eq!(local(&c.storages[0]).path, dir.path().join("d/Data.fs"));
    assert_eq!(local(&c.storages[0]).blob_dir, Some(dir.path().join("d/blobs")));
    assert_eq!(c.storages[0].state_file, dir.path().join("d/1.raid-state"));

    std::fs::write(dir.path().join("f"), b"x").expect("write");
    let err = c.override_data(&dir.path().join("f")).expect_err("a file").to_string();
    assert!(err.starts_with("--data:") && err.contains("not a directory"), "{err}");
    assert!(Config::check_data_dir(&dir.path().join("f")).is_err());
    assert!(Config::check_data_dir(&dir.path().join("new/dir")).is_ok());

    c.storages.push(c.storages[0].clone());
    let err = c.override_data(dir.path()).expect_err("two storages").to_string();
    assert!(err.starts_with("--data:") && err.contains("2 storages"), "{err}");
}

const RAID: &str = "[server]\nadmin = \"run/admin.sock\"\n\n[[storage]]\nname = \"1\"\ncall_timeout = 2\n\
                    write_timeout = 4.5\nconnect_timeout = 1\n\n  [[storage.backend]]\n  name = \"a\"\n  \
                    path = \"var/a/Data.fs\"\n  blob_dir = \"var/a/blobs\"\n  fsync = false\n\n  \
                    [[storage.backend]]\n  name = \"b\"\n  zeo = \"127.0.0.1:8101\"\n\n  \
                    [[storage.backend]]\n  name = \"c\"\n  zeo = \"unix:zeo.sock\"\n  storage = \"main\"\n  \
                    read_only = true\n";

#[test]
fn a_raid_storage_is_read_with_its_backends() {
    let (dir, r) = load(RAID);
    let c = r.expect("valid");
    assert_eq!(c.server.admin, dir.path().join("run/admin.sock"));
    let s = &c.storages[0];
    assert_eq!(s.state_file, dir.path().join("var/a/1.raid-state"), "next to the first local Data.fs");
    assert_eq!((s.call_timeout, s.write_timeout), (Duration::from_secs(2), Duration::from_secs_f64(4.5)));
    assert_eq!(s.connect_timeout, Duration::from_secs(1));
    assert_eq!(s.backends.len(), 3);
    let a = s.backends[0].local().expect("local");
    assert_eq!((a.path.clone(), a.fsync, a.read_only), (dir.path().join("var/a/Data.fs"), false, false));
    assert_eq!(
        s.backends[1].kind,
        BackendKind::Zeo(ZeoSettings {
            address: "127.0.0.1:8101".parse().expect("addr"),
            storage: "1".into(),
            read_only: false
        })
    );
    assert_eq!(
        s.backends[2].kind,
        BackendKind::Zeo(ZeoSettings {
            address: crate::backend::remote::RemoteAddr::Unix(dir.path().join("zeo.sock")),
            storage: "main".into(),
            read_only: true
        })
    );
    assert_eq!(s.backends[1].label(), "zeo 127.0.0.1:8101 storage 1");
    assert_eq!(s.specs()[0].label, format!("local {}", dir.path().join("var/a/Data.fs").display()));
    let summary = c.summary();
    assert!(summary.contains("backend \"b\": zeo 127.0.0.1:8101 storage 1"), "{summary}");
    assert!(summary.contains("3 backend(s)"), "{summary}");

    // Only remote backends: the state file goes next to the config file.
    let (dir, r) =
        load("[[storage]]\nname = \"x\"\n[[storage.backend]]\nname = \"r\"\nzeo = \"127.0.0.1:1\"\n");
    assert_eq!(r.expect("valid").storages[0].state_file, dir.path().join("x.raid-state"));
    // The old form is a RAID of one backend named "local".
    let (_d, r) = load(STORAGE);
    let c = r.expect("valid");
    assert_eq!(c.storages[0].backends.len(), 1);
    assert_eq!(c.storages[0].backends[0].name, SINGLE_BACKEND);
}

#[test]
fn raid_backends_are_checked() {
    let head = "[[storage]]\nname = \"1\"\n";
    let b = |rest: &str| format!("{head}[[storage.backend]]\nname = \"a\"\n{rest}");
    expect_err(&b(""), 4, "storage.backend", "needs `path`");
    expect_err(&b("path = \"a.fs\"\nzeo = \"127.0.0.1:1\"\n"), 6, "storage.backend.zeo", "not both");
    expect_err(&b("zeo = \"nowhere\"\n"), 5, "storage.backend.zeo", "not a backend address");
    expect_err(&b("zeo = \"127.0.0.1:1\"\nfsync = false\n"), 6, "storage.backend.fsync", "only a local");
    expect_err(&b("path = \"a.fs\"\nstorage = \"2\"\n"), 6, "storage.backend.storage", "only a `zeo`");
    expect_err(&b("path = \"a.fs\"\nbogus = 1\n"), 6, "storage.backend.bogus", "unknown field");
    let two = b("path = \"a.fs\"\n[[storage.backend]]\nname = \"a\"\npath = \"b.fs\"\n");
    expect_err(&two, 7, "storage.backend.name", "already used");
    let same = b("path = \"a.fs\"\n[[storage.backend]]\nname = \"b\"\npath = \"a.fs\"\n");
    expect_err(&same, 8, "storage.backend.path", "already served");
    let stray = format!("{head}path = \"x.fs\"\n[[storage.backend]]\nname = \"a\"\npath = \"a.fs\"\n");
    expect_err(&stray, 3, "storage.path", "in each backend");
    expect_err(
        &format!("{head}call_timeout = 0\n{}", &b("path = \"a.fs\"\n")[head.len()..]),
        3,
        "storage.call_timeout",
        "more than zero",
    );
    let two_states = "[[storage]]\nname = \"1\"\npath = \"a.fs\"\nstate_file = \"s\"\n\
                      [[storage]]\nname = \"2\"\npath = \"b.fs\"\nstate_file = \"s\"\n";
    expect_err(two_states, 6, "storage.state_file", "already the state file");
}

#[test]
fn server_read_only_makes_every_storage_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.fs"), b"").expect("write");
    let file = dir.path().join("zeoraid.toml");
    std::fs::write(&file, "[server]\nread_only = true\n[[storage]]\nname = \"1\"\npath = \"a.fs\"\n")
        .expect("write");
    let c = Config::load(&file).expect("valid");
    assert!(local(&c.storages[0]).read_only);
    assert!(local(&c.storages[0]).local_config().read_only);
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

#[test]
fn recovery_settings_are_read_and_reach_the_raid_config() {
    let head = "[[storage]]\nname = \"1\"\n";
    let tail = "[[storage.backend]]\nname = \"a\"\npath = \"a.fs\"\n";
    let with = |keys: &str| format!("{head}{keys}{tail}");
    // Defaults: no limit, the RAID's own switch settings.
    let (_d, r) = load(&with(""));
    let s = r.expect("valid").storages.remove(0);
    let def = zeoraid_core::raid::RaidConfig::new("1");
    assert_eq!(s.raid_config(), def);
    assert_eq!(s.recovery_rate, zeoraid_core::raid::RateLimit::UNLIMITED);
    // Integers, strings with units, both limits.
    let (_d, r) = load(&with(
        "recovery_rate_bytes = \"20MB\"\nrecovery_rate_txns = 500\nswitch_max_lag = 5\nswitch_timeout = 0.5\n",
    ));
    let c = r.expect("valid");
    let rc = c.storages[0].raid_config();
    assert_eq!(
        rc.recovery_rate,
        zeoraid_core::raid::RateLimit { bytes_per_sec: Some(20_000_000), txns_per_sec: Some(500) }
    );
    assert_eq!((rc.switch_max_lag, rc.switch_timeout), (5, Duration::from_millis(500)));
    let summary = c.summary();
    assert!(summary.contains("recovery rate: 20000000 bytes/s, 500 txns/s, switch_max_lag: 5"), "{summary}");
    let (_d, r) = load(&with("recovery_rate_bytes = 524288\nswitch_max_lag = 0\n"));
    let s = r.expect("valid").storages.remove(0);
    assert_eq!((s.recovery_rate.bytes_per_sec, s.recovery_rate.txns_per_sec), (Some(524_288), None));
    assert_eq!(s.switch_max_lag, 0);
    let (_d, r) = load(&with("recovery_rate_bytes = \"512KiB\"\n"));
    assert_eq!(r.expect("valid").storages[0].recovery_rate.bytes_per_sec, Some(524_288));
}

#[test]
fn bad_recovery_settings_name_their_key() {
    let head = "[[storage]]\nname = \"1\"\n";
    let tail = "[[storage.backend]]\nname = \"a\"\npath = \"a.fs\"\n";
    let with = |keys: &str| format!("{head}{keys}{tail}");
    let key = "storage.recovery_rate_bytes";
    expect_err(&with("recovery_rate_bytes = 0\n"), 3, key, "at least 1 byte/s");
    expect_err(&with("recovery_rate_bytes = -3\n"), 3, key, "at least 1 byte/s");
    expect_err(&with("recovery_rate_bytes = \"20XB\"\n"), 3, key, "unknown unit");
    expect_err(&with("recovery_rate_bytes = \"fast\"\n"), 3, key, "not a byte count");
    expect_err(&with("recovery_rate_bytes = 1.5\n"), 3, key, "");
    expect_err(&with("recovery_rate_txns = 0\n"), 3, "storage.recovery_rate_txns", "not between 1");
    expect_err(&with("recovery_rate_txns = \"5\"\n"), 3, "storage.recovery_rate_txns", "");
    expect_err(&with("switch_max_lag = -1\n"), 3, "storage.switch_max_lag", "not between 0 and 1000000");
    expect_err(&with("switch_timeout = 0\n"), 3, "storage.switch_timeout", "more than zero");
    expect_err(&with("switch_timeout = \"2s\"\n"), 3, "storage.switch_timeout", "");
}
