//! Tests of settings: defaults, precedence file < environment < flag (the
//! environment part in a child process, so no test changes this process's
//! environment), bad values, and that `--help` shows every declared setting.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::{SettingArgs, Settings, DECLARED};

/// The flags as `serve` takes them.
#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    settings: SettingArgs,
}

/// A fresh directory holding `switchboard.toml` with `text`.
fn config_file(name: &str, text: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchboard-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn load_file(name: &str, text: &str) -> anyhow::Result<Settings> {
    let file = config_file(name, text);
    let loaded = Settings::load(&SettingArgs {
        config: Some(file.clone()),
        ..Default::default()
    });
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    loaded
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let s = load_file("defaults", "").unwrap();
    assert_eq!(s.bind, "127.0.0.1:3000");
    assert_eq!(s.jwt_secret, None);
    assert_eq!(s.jwt_public_key_file, None);
    assert_eq!(s.api_key, None);
    assert_eq!(s.database_url, "sqlite://switchboard.db");
    assert_eq!(s.broker, "memory");
    assert_eq!(s.redis_prefix, "switchboard:");
    assert!(s.cors_origins.is_empty());
    assert_eq!(s.max_message_chars, 5000);
    assert_eq!(s.max_payload, 1_000_000);
    assert_eq!(s.events_per_second, 50);
    assert_eq!(s.max_connections_per_user, 50);
    assert_eq!(s.max_rooms_per_connection, 100);
    assert_eq!(s.recovery_window, Duration::from_secs(120));
    assert_eq!(s.sse_ping_interval, Duration::from_millis(30_000));
    assert_eq!(s.max_streams_per_user, 10);
    assert_eq!(s.max_poll_secs, 30);
    assert_eq!(s.max_notification_bytes, 16 * 1024);
    assert_eq!(s.presence_ttl, Duration::from_millis(30_000));
    assert_eq!(s.typing_timeout, Duration::from_millis(6_000));
    assert_eq!(s.typing_events_per_second, 5);
    assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(s.ping_interval, Duration::from_millis(25_000));
    assert_eq!(s.ping_timeout, Duration::from_millis(20_000));
    assert_eq!(s.ws_write_coalesce, Duration::from_micros(2_000));
    assert_eq!(s.collab.max_update_bytes, 1 << 20);
    assert_eq!(s.collab.max_document_bytes, 16 << 20);
    assert_eq!(s.collab.max_clients, 256);
    assert_eq!(s.collab.unload_after, Duration::from_secs(30));
    assert_eq!(s.collab.compact_updates, 500);
    assert_eq!(s.log_format, "text");
}

/// Marks the child run of [`environment_overrides_the_file_and_flags_override_both`].
const CHILD: &str = "SWITCHBOARD_CONFIG_TEST_CHILD";

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let name = "config::tests::environment_overrides_the_file_and_flags_override_both";
    if std::env::var_os(CHILD).is_none() {
        // Run this test again in a child with only the variables below set.
        let file = config_file(
            "precedence",
            "bind = \"127.0.0.1:4000\"\nmax_message_chars = 10\nping_interval_ms = 1000\n\
             cors_origins = [\"http://file\"]\ncollab_max_clients = 7\ncollab_unload_secs = 9\n",
        );
        let mut child = Command::new(std::env::current_exe().unwrap());
        child.args([name, "--exact", "--nocapture", "--test-threads=1"]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                child.env_remove(key);
            }
        }
        let output = child
            .env(CHILD, "1")
            .env("SWITCHBOARD_CONFIG", &file)
            .env("SWITCHBOARD_MAX_MESSAGE_CHARS", "20")
            .env("SWITCHBOARD_PING_INTERVAL_MS", "2000")
            .env("SWITCHBOARD_CORS_ORIGINS", " http://a, ,http://b ")
            .env("SWITCHBOARD_COLLAB_UNLOAD_SECS", "8")
            .output()
            .unwrap();
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
        return;
    }
    let parse = |flags: &[&str]| {
        let args =
            Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).unwrap();
        Settings::load(&args.settings).unwrap()
    };
    let s = parse(&["--ping-interval-ms", "3000", "--max-poll-secs", "40"]);
    assert_eq!(s.bind, "127.0.0.1:4000", "file");
    assert_eq!(s.collab.max_clients, 7, "file");
    assert_eq!(s.max_message_chars, 20, "environment over file");
    assert_eq!(
        s.cors_origins,
        ["http://a", "http://b"],
        "environment over file"
    );
    assert_eq!(
        s.collab.unload_after,
        Duration::from_secs(8),
        "environment over file"
    );
    assert_eq!(
        s.ping_interval,
        Duration::from_millis(3000),
        "flag over both"
    );
    assert_eq!(s.max_poll_secs, 40, "flag over default");
    assert_eq!(s.database_url, "sqlite://switchboard.db", "default");
    let s = parse(&["--cors-origins", "http://c", "--collab-unload-secs", "1"]);
    assert_eq!(s.cors_origins, ["http://c"], "flag over environment");
    assert_eq!(
        s.collab.unload_after,
        Duration::from_secs(1),
        "flag over environment"
    );
    assert_eq!(
        s.ping_interval,
        Duration::from_millis(2000),
        "environment over file"
    );
}

#[test]
fn bad_values_are_refused_with_a_message() {
    let flag = Serve::try_parse_from(["serve", "--presence-ttl-ms", "soon"])
        .err()
        .unwrap();
    assert_eq!(flag.kind(), clap::error::ErrorKind::ValueValidation);
    assert!(
        flag.to_string().contains(
            "invalid value 'soon' for '--presence-ttl-ms <PRESENCE_TTL_MS>': invalid digit"
        ),
        "{flag}"
    );
    let list = load_file("list", "cors_origins = \"http://a\"\n").unwrap_err();
    assert!(
        format!("{list:#}").contains("invalid type: string \"http://a\", expected a sequence"),
        "{list:#}"
    );
    let number = load_file("number", "ping_interval_ms = \"1s\"\n").unwrap_err();
    assert!(
        format!("{number:#}").contains("invalid type: string \"1s\", expected u64"),
        "{number:#}"
    );
    let unknown = load_file("unknown", "max_mesage_chars = 10\n").unwrap_err();
    assert!(
        format!("{unknown:#}").contains("unknown field `max_mesage_chars`"),
        "{unknown:#}"
    );
    assert!(
        format!("{unknown:#}").contains("switchboard.toml"),
        "{unknown:#}"
    );
    let checked = load_file("checked", "presence_ttl_ms = 299\n").unwrap_err();
    assert_eq!(
        checked.to_string(),
        "presence_ttl_ms must be at least 300; typing_timeout_ms and typing_events_per_second positive"
    );
    let broker = load_file("broker", "broker = \"nats://x\"\n").unwrap_err();
    assert!(
        broker
            .to_string()
            .starts_with("invalid broker URL \"nats://x\""),
        "{broker}"
    );
}

#[test]
fn log_format_is_text_or_json() {
    assert_eq!(
        load_file("json", "log_format = \"json\"\n")
            .unwrap()
            .log_format,
        "json"
    );
    let bad = load_file("logfmt", "log_format = \"xml\"\n").unwrap_err();
    assert_eq!(
        bad.to_string(),
        "unsupported log_format \"xml\": use `text` or `json`"
    );
}

#[test]
fn secrets_shorter_than_16_bytes_or_empty_are_refused() {
    let with = |secret: Option<&str>, key: Option<&str>| {
        let mut s = load_file("secrets", "").unwrap();
        s.jwt_secret = secret.map(str::to_owned);
        s.api_key = key.map(str::to_owned);
        s
    };
    let good = "0123456789abcdef";
    assert_eq!(with(Some(good), None).check_jwt_secret().unwrap(), good);
    for bad in [None, Some(""), Some("0123456789abcde")] {
        let e = with(bad, None).check_jwt_secret().unwrap_err().to_string();
        assert!(e.starts_with("SWITCHBOARD_JWT_SECRET "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    with(Some(good), None).check_api_keys().unwrap();
    with(Some(good), Some(good)).check_api_keys().unwrap();
    with(Some(good), Some("0123456789abcdef, fedcba9876543210"))
        .check_api_keys()
        .unwrap();
    for bad in [
        "",
        " ",
        "short",
        "0123456789abcdef,",
        "0123456789abcdef,short",
        ",0123456789abcdef",
    ] {
        let e = with(Some(good), Some(bad))
            .check_api_keys()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SWITCHBOARD_API_KEY "), "{bad:?}: {e}");
    }
}

#[test]
fn api_keys_are_the_comma_separated_non_empty_ones() {
    let mut s = load_file("keys", "").unwrap();
    assert_eq!(s.api_keys().count(), 0);
    s.api_key = Some(String::new());
    assert_eq!(s.api_keys().count(), 0, "an empty key is no key");
    s.api_key = Some(" 0123456789abcdef ,, fedcba9876543210".into());
    assert_eq!(
        s.api_keys().collect::<Vec<_>>(),
        ["0123456789abcdef", "fedcba9876543210"]
    );
}

#[test]
fn help_shows_every_setting_with_its_environment_variable_and_default() {
    let help = Serve::command().render_long_help().to_string();
    for (key, env, doc, default) in DECLARED {
        let flag = format!("--{} <{}>", key.replace('_', "-"), key.to_uppercase());
        assert!(help.contains(&flag), "{flag} in\n{help}");
        assert!(help.contains(&format!("[env: {env}")), "{env} in\n{help}");
        let default = default.map(|d| d.trim_matches('"')).unwrap_or_default();
        assert!(
            doc.contains(default),
            "the help of {key} names its default {default}"
        );
    }
    assert!(help.contains("--config <CONFIG>"));
}
