//! API keys from the command line: made, listed and revoked by reading and
//! writing the key registry topic directly, so that the first admin key can
//! be made before any service will answer (access to the brokers is the
//! credential here).

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use rapport_common::apikeys::{self, KeyBook, KeyInfo, Kind};
use rapport_common::config::Config;
use rapport_projections::time::{format_rfc3339, parse_rfc3339};
use serde::Serialize;

/// How long `list` and `revoke` wait to read the registry whole.
const READ_PATIENCE: Duration = Duration::from_secs(60);
/// How long a new or revoked key's record may wait for the broker.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `--expires-in`: anything longer is a typo or means "never".
const MAX_EXPIRY_DAYS: u32 = 36_525;
/// Longest key name, in characters.
const MAX_NAME_CHARS: usize = 100;
const DAY_MS: i64 = 86_400_000;

#[derive(Subcommand, Debug)]
pub(crate) enum KeysAction {
    /// Make a key and print its secret, once.
    ///
    /// The secret is printed alone on stdout: only its SHA-256 is stored, so
    /// it cannot be shown again. What was made is said on stderr, so `KEY=$(
    /// rapportctl keys create --kind read --name analysts)` keeps the secret
    /// and shows the rest.
    Create {
        /// What the key may do.
        #[arg(long, value_enum)]
        kind: KeyKind,
        /// Who or what uses the key ("storefront", "analysts", "alice's
        /// laptop"): `list` shows it, and it says which key to revoke.
        #[arg(long)]
        name: String,
        /// The key stops working this many days from now. Default: it never
        /// expires (until revoked).
        #[arg(long, value_name = "DAYS", conflicts_with = "expires_at")]
        expires_in: Option<u32>,
        /// The key stops working at this time, RFC 3339 such as
        /// 2026-12-31T23:59:59Z. Default: it never expires (until revoked).
        #[arg(long, value_name = "RFC3339")]
        expires_at: Option<String>,
    },
    /// List every key ever made, never a secret.
    ///
    /// Per key: id, kind, name, when it was created, expires and was last
    /// used (to the minute; UTC, RFC 3339) and whether it is live, expired
    /// or revoked. Secrets are not stored, so they cannot be shown.
    List {
        /// Print a JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: the services refuse it within seconds.
    ///
    /// No restart is needed. Revoking is final; make a new key to replace it.
    Revoke {
        /// The key's id, as `rapportctl keys list` shows it (not its secret).
        id: String,
    },
}

/// What a key may do. An admin key may do everything the others may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyKind {
    /// Posts events only (POST /v1/events): safe to ship in a storefront or
    /// an app.
    Write,
    /// Reads customers, timelines, scores, models, segments, exports and
    /// /metrics.
    Read,
    /// Everything, including /v1/admin/… (rapportctl status, replay, verify,
    /// reidentify).
    Admin,
    /// For Rapport's own services: the vault's keys, which ingest seals
    /// personal fields with and the projector opens them with. Nothing else.
    Service,
}

impl From<KeyKind> for Kind {
    fn from(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Write => Kind::Write,
            KeyKind::Read => Kind::Read,
            KeyKind::Admin => Kind::Admin,
            KeyKind::Service => Kind::Service,
        }
    }
}

pub(crate) fn run(config: &Config, action: KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::Create {
            kind,
            name,
            expires_in,
            expires_at,
        } => create(
            config,
            kind.into(),
            &name,
            expires_in,
            expires_at.as_deref(),
        ),
        KeysAction::List { json } => list(config, json),
        KeysAction::Revoke { id } => revoke(config, id.trim()),
    }
}

/// A key's name, trimmed, or why it cannot be one.
fn checked_name(name: &str) -> anyhow::Result<String> {
    let name = name.trim();
    if name.is_empty() {
        bail!(
            "--name must not be empty: name the key after who or what uses it, such as storefront"
        );
    }
    if name.chars().any(char::is_control) {
        bail!("--name must be one line of printable characters");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        bail!("--name must be at most {MAX_NAME_CHARS} characters");
    }
    Ok(name.to_owned())
}

/// When a key made at `now_ms` expires, from `--expires-in` or
/// `--expires-at`: `None` for never.
fn expiry(
    now_ms: i64,
    expires_in_days: Option<u32>,
    expires_at: Option<&str>,
) -> anyhow::Result<Option<i64>> {
    match (expires_in_days, expires_at) {
        (Some(_), Some(_)) => {
            bail!("give --expires-in or --expires-at, not both")
        }
        (None, None) => Ok(None),
        (Some(0), None) => {
            bail!("--expires-in 0 would make a key that has already expired; give at least 1 day")
        }
        (Some(days), None) if days > MAX_EXPIRY_DAYS => bail!(
            "--expires-in {days} is more than {MAX_EXPIRY_DAYS} days; leave it out for a key that never expires"
        ),
        (Some(days), None) => Ok(Some(now_ms + i64::from(days) * DAY_MS)),
        (None, Some(text)) => {
            let at_ms = parse_rfc3339(text).with_context(|| format!("--expires-at {text}"))?;
            if at_ms <= now_ms {
                bail!(
                    "--expires-at {text} is not in the future (it is now {})",
                    format_rfc3339(now_ms)
                );
            }
            Ok(Some(at_ms))
        }
    }
}

fn create(
    config: &Config,
    kind: Kind,
    name: &str,
    expires_in_days: Option<u32>,
    expires_at: Option<&str>,
) -> anyhow::Result<()> {
    let name = checked_name(name)?;
    let now_ms = rapport_common::now_ms();
    let expires_at_ms = expiry(now_ms, expires_in_days, expires_at)?;
    let made = apikeys::create(kind, &name, now_ms, expires_at_ms)?;
    write(config, &made.info)?;
    println!("{}", made.secret);
    let info = &made.info;
    eprintln!(
        "created {} key {} {:?}, {}; its secret (above) is shown once: store it now",
        info.kind.as_str(),
        info.id,
        info.name,
        match info.expires_at_ms {
            Some(at_ms) => format!("expires {}", format_rfc3339(at_ms)),
            None => "never expires".to_owned(),
        }
    );
    Ok(())
}

/// A key as `list --json` shows it: the registry's fields (times in
/// milliseconds) and the same times in RFC 3339.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    key: &'a KeyInfo,
    state: &'static str,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

impl<'a> Listed<'a> {
    fn new(key: &'a KeyInfo, now_ms: i64) -> Self {
        Self {
            key,
            state: key.state(now_ms).as_str(),
            created_at: format_rfc3339(key.created_at_ms),
            expires_at: key.expires_at_ms.map(format_rfc3339),
            revoked_at: key.revoked_at_ms.map(format_rfc3339),
            last_used_at: key.last_used_at_ms.map(format_rfc3339),
        }
    }
}

fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    let book = read_book(config)?;
    let keys = book.all();
    let now_ms = rapport_common::now_ms();
    if json {
        let listed: Vec<Listed<'_>> = keys.iter().map(|key| Listed::new(key, now_ms)).collect();
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else if keys.is_empty() {
        eprintln!(
            "no keys in {}; make one with `rapportctl keys create --kind admin --name NAME`",
            config.topics.keys
        );
    } else {
        print!("{}", table(&keys, now_ms));
    }
    Ok(())
}

/// The keys as a table, one line each, times in RFC 3339.
fn table(keys: &[&KeyInfo], now_ms: i64) -> String {
    let or_never = |at_ms: Option<i64>| at_ms.map_or_else(|| "never".to_owned(), format_rfc3339);
    let name_width = keys
        .iter()
        .map(|key| key.name.chars().count())
        .chain(["name".len()])
        .max()
        .unwrap_or_default();
    let time_width = format_rfc3339(0).len();
    let mut lines = vec![format!(
        "{:<16}  {:<5}  {:<name_width$}  {:<time_width$}  {:<time_width$}  {:<time_width$}  state",
        "id", "kind", "name", "created", "expires", "last used"
    )];
    for key in keys {
        lines.push(format!(
            "{:<16}  {:<5}  {:<name_width$}  {:<time_width$}  {:<time_width$}  {:<time_width$}  {}",
            key.id,
            key.kind.as_str(),
            key.name,
            format_rfc3339(key.created_at_ms),
            or_never(key.expires_at_ms),
            or_never(key.last_used_at_ms),
            key.state(now_ms).as_str()
        ));
    }
    lines
        .iter()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}

fn revoke(config: &Config, id: &str) -> anyhow::Result<()> {
    let book = read_book(config)?;
    let Some(key) = book.get(id) else {
        bail!(
            "there is no key with id {id:?} in {}; `rapportctl keys list` shows the ids",
            config.topics.keys
        );
    };
    if let Some(revoked_at_ms) = key.revoked_at_ms {
        println!(
            "{} key {} {:?} was already revoked at {}",
            key.kind.as_str(),
            key.id,
            key.name,
            format_rfc3339(revoked_at_ms)
        );
        return Ok(());
    }
    write(config, &key.revoked(rapport_common::now_ms()))?;
    println!(
        "revoked {} key {} {:?}; the services stop accepting it within seconds",
        key.kind.as_str(),
        key.id,
        key.name
    );
    Ok(())
}

/// The registry, folded from its topic. A record that does not fold is
/// skipped with a warning, as the services skip it.
fn read_book(config: &Config) -> anyhow::Result<KeyBook> {
    let topic = &config.topics.keys;
    let records = rapport_common::read_all::read_to_end(&config.kafka, topic, READ_PATIENCE)
        .with_context(|| {
            format!("reading the key registry {topic} (does it exist? `rapportctl topics create`)")
        })?;
    let mut book = KeyBook::default();
    for record in &records {
        if let Err(error) = book.apply(&record.key, &record.payload) {
            tracing::warn!(topic, partition = record.partition, offset = record.offset, %error, "skipping a key registry record");
        }
    }
    Ok(book)
}

/// Writes a key's record to the registry and waits for the broker to have it.
fn write(config: &Config, key: &KeyInfo) -> anyhow::Result<()> {
    let topic = &config.topics.keys;
    let (producer, _) =
        rapport_common::kafka::producer(&config.kafka, "rapportctl", Some(WRITE_TIMEOUT), 100)?;
    let (record_key, payload) = key.record();
    apikeys::write_record(&producer, topic, record_key, payload).with_context(|| {
        format!(
            "writing key {} to the key registry {topic} (does it exist? `rapportctl topics create`)",
            key.id
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The `keys` part of rapportctl's command line.
    #[derive(Parser, Debug)]
    struct KeysCommand {
        #[command(subcommand)]
        action: KeysAction,
    }

    fn parse(line: &[&str]) -> Result<KeysAction, clap::Error> {
        KeysCommand::try_parse_from(std::iter::once("keys").chain(line.iter().copied()))
            .map(|command| command.action)
    }

    const NOW_MS: i64 = 1_780_000_000_000;

    #[test]
    fn create_takes_each_kind_and_refuses_others_naming_the_choices() {
        for (text, kind) in [
            ("write", Kind::Write),
            ("read", Kind::Read),
            ("admin", Kind::Admin),
            ("service", Kind::Service),
        ] {
            let Ok(KeysAction::Create { kind: parsed, .. }) =
                parse(&["create", "--kind", text, "--name", "shop"])
            else {
                panic!("{text} does not parse");
            };
            assert_eq!(Kind::from(parsed), kind);
        }
        let refused = parse(&["create", "--kind", "root", "--name", "shop"])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("root") && refused.contains("write, read, admin"),
            "{refused}"
        );
        let missing = parse(&["create", "--name", "shop"])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("--kind"), "{missing}");
    }

    #[test]
    fn create_refuses_both_expiry_flags() {
        let refused = parse(&[
            "create",
            "--kind",
            "read",
            "--name",
            "analysts",
            "--expires-in",
            "30",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("--expires-in") && refused.contains("--expires-at"),
            "{refused}"
        );
        let error = expiry(NOW_MS, Some(30), Some("2030-01-01T00:00:00Z")).unwrap_err();
        assert!(error.to_string().contains("not both"), "{error}");
    }

    #[test]
    fn a_name_is_trimmed_and_must_be_a_short_nonempty_line() {
        assert_eq!(checked_name("  storefront ").unwrap(), "storefront");
        assert_eq!(checked_name("make-run write").unwrap(), "make-run write");
        for (name, says) in [
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            ("two\nlines", "one line"),
            (&"x".repeat(MAX_NAME_CHARS + 1), "at most"),
        ] {
            let error = checked_name(name).unwrap_err().to_string();
            assert!(
                error.contains("--name") && error.contains(says),
                "{name:?}: {error}"
            );
        }
        assert!(checked_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
    }

    #[test]
    fn expiry_is_never_days_from_now_or_a_future_time() {
        assert_eq!(expiry(NOW_MS, None, None).unwrap(), None);
        assert_eq!(
            expiry(NOW_MS, Some(90), None).unwrap(),
            Some(NOW_MS + 90 * DAY_MS)
        );
        assert_eq!(
            expiry(NOW_MS, None, Some("2030-01-01T00:00:00Z")).unwrap(),
            Some(parse_rfc3339("2030-01-01T00:00:00Z").unwrap())
        );
        assert!(
            expiry(NOW_MS, Some(MAX_EXPIRY_DAYS), None)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn expiry_refuses_the_past_now_nonsense_and_too_far() {
        for (days, at, says) in [
            (Some(0), None, "already expired"),
            (Some(MAX_EXPIRY_DAYS + 1), None, "never expires"),
            (None, Some("2020-01-01T00:00:00Z"), "not in the future"),
            (None, Some(&*format_rfc3339(NOW_MS)), "not in the future"),
            (None, Some("tomorrow"), "RFC 3339"),
            (None, Some("2030-02-30T00:00:00Z"), "no such date"),
        ] {
            let error = format!("{:#}", expiry(NOW_MS, days, at).unwrap_err());
            assert!(error.contains(says), "{days:?} {at:?}: {error}");
        }
        // Not a number of days: clap says so before anything runs.
        let refused = parse(&[
            "create",
            "--kind",
            "write",
            "--name",
            "shop",
            "--expires-in",
            "-3",
        ]);
        assert!(refused.is_err());
    }

    #[test]
    fn revoke_needs_an_id_and_list_takes_json() {
        assert!(parse(&["revoke"]).is_err());
        assert!(matches!(
            parse(&["revoke", "0123456789abcdef"]),
            Ok(KeysAction::Revoke { id }) if id == "0123456789abcdef"
        ));
        assert!(matches!(
            parse(&["list", "--json"]),
            Ok(KeysAction::List { json: true })
        ));
    }

    #[test]
    fn the_table_shows_rfc3339_times_and_states_and_no_secret() {
        let live = apikeys::create(Kind::Write, "storefront", NOW_MS - DAY_MS, None).unwrap();
        let expired = apikeys::create(
            Kind::Read,
            "old analysts",
            NOW_MS - 2 * DAY_MS,
            Some(NOW_MS - 1),
        )
        .unwrap();
        let revoked = apikeys::create(Kind::Admin, "ops", NOW_MS - 3 * DAY_MS, None).unwrap();
        let mut book = KeyBook::default();
        for info in [
            live.info.clone(),
            expired.info.clone(),
            revoked.info.revoked(NOW_MS - 10),
        ] {
            book.insert(info);
        }
        let shown = table(&book.all(), NOW_MS);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 4, "{shown}");
        assert!(
            lines[0].starts_with("id ") && lines[0].ends_with("state"),
            "{shown}"
        );
        // Oldest first.
        assert!(
            lines[1].contains(&revoked.info.id) && lines[1].ends_with("revoked"),
            "{shown}"
        );
        assert!(
            lines[2].contains(&format_rfc3339(NOW_MS - 1)) && lines[2].ends_with("expired"),
            "{shown}"
        );
        assert!(
            lines[3].contains(&format_rfc3339(NOW_MS - DAY_MS)) && lines[3].ends_with("live"),
            "{shown}"
        );
        assert!(lines[3].contains("never"), "{shown}");
        // The columns line up whatever the name's length.
        let state_column = lines[0].find("state").unwrap();
        for line in &lines[1..] {
            assert!(
                line[state_column..].chars().all(|c| c.is_ascii_lowercase()),
                "{shown}"
            );
        }
        for secret in [&live.secret, &expired.secret, &revoked.secret] {
            assert!(!shown.contains(&secret[8..]), "{shown}");
        }
    }

    #[test]
    fn the_json_listing_has_the_state_and_rfc3339_times_and_no_secret() {
        let made = apikeys::create(Kind::Read, "analysts", NOW_MS, Some(NOW_MS + DAY_MS)).unwrap();
        let listed = serde_json::to_value(Listed::new(&made.info, NOW_MS)).unwrap();
        assert_eq!(listed["id"], made.info.id.as_str());
        assert_eq!(listed["kind"], "read");
        assert_eq!(listed["state"], "live");
        assert_eq!(listed["created_at_ms"], NOW_MS);
        assert_eq!(listed["created_at"], format_rfc3339(NOW_MS));
        assert_eq!(listed["expires_at"], format_rfc3339(NOW_MS + DAY_MS));
        assert_eq!(listed["last_used_at"], serde_json::Value::Null);
        assert!(!listed.to_string().contains(&made.secret[8..]));
    }
}
