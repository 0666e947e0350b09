//! `jit-broker audit`: verify the chain (in the database or an export),
//! export evidence, and the checkpoint signing key.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{AuditCommand, open_store};
use crate::config::Config;

/// The public key `verify` trusts: the flag, the config, or the checkpoint
/// key's own.
/// The key checkpoints must be signed with: the flag, the config's public
/// key, or the public half of the configured signing key.
fn trusted_key(config: &Config, flag: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(key) = flag.or_else(|| config.audit.public_key.clone()) {
        return Ok(Some(key));
    }
    Ok(config.audit.checkpoint_key()?.map(|k| k.public_hex()))
}

pub(super) async fn audit(config: &Config, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            file: None,
            public_key,
            trust_embedded_key,
        } => verify_store(config, trusted_key(config, public_key)?, trust_embedded_key).await,
        AuditCommand::Verify {
            file: Some(path),
            public_key,
            trust_embedded_key,
        } => verify_file(&path, trusted_key(config, public_key)?, trust_embedded_key),
        AuditCommand::Export {
            since,
            until,
            grant,
            user,
            out,
        } => {
            let filter = jit_app::AuditFilter {
                since,
                until,
                grant,
                user,
            };
            export(config, filter, out.as_deref()).await
        }
        AuditCommand::Keygen { out } => {
            let key = jit_store::CheckpointKey::generate();
            write_secret_file(&out, &key.secret_hex())?;
            println!("{}", key.public_hex());
            eprintln!(
                "secret key written to {}; set audit.checkpoint_key_file to it, and give auditors the public key above",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint => {
            let Some(key) = config.audit.checkpoint_key()? else {
                anyhow::bail!("audit.checkpoint_key_file is not set");
            };
            let store = open_store(config, true).await?;
            let app = crate::bare_app(config, store)?;
            match app.checkpoint_audit(&key).await? {
                Some(cp) => println!("checkpoint: seq {} hash {}", cp.seq, cp.hash),
                None => println!("nothing new since the last checkpoint"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Checkpoints checked against the keys they name prove nothing against
/// whoever could write them: said loudly, and a failure unless asked for.
fn untrusted_checkpoints(checkpoints: u64, trusted: bool, accept: bool) -> Option<ExitCode> {
    if checkpoints == 0 || trusted {
        return None;
    }
    eprintln!(
        "WARNING: no trusted public key (--public-key, audit.public_key or audit.checkpoint_key_file): \
         the {checkpoints} checkpoint(s) were checked only against the keys they name themselves, \
         which anyone able to rewrite the log could also have made"
    );
    if accept {
        None
    } else {
        eprintln!("refusing to call that verified; pass --trust-embedded-key to accept it");
        Some(ExitCode::from(3))
    }
}

/// The whole chain in the database.
async fn verify_store(
    config: &Config,
    trusted: Option<String>,
    trust_embedded_key: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store(config, false).await?;
    match jit_store::verify_audit(store.as_ref(), trusted.as_deref()).await? {
        Ok(r) => {
            if let Some(refused) =
                untrusted_checkpoints(r.checkpoints, r.trusted_key, trust_embedded_key)
            {
                return Ok(refused);
            }
            println!(
                "audit chain verified: {} events, {} checkpoints ({})",
                r.events,
                r.checkpoints,
                if r.trusted_key {
                    "signatures checked against the trusted key"
                } else {
                    "no trusted key given: signatures checked against the keys they name"
                }
            )
        }
        Err(broken) => {
            eprintln!("{broken}");
            return Ok(ExitCode::from(2));
        }
    }
    // What was done with each grant: the events kept must be the set whose
    // digest the chain last recorded.
    let mut recorded_events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_events(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        recorded_events.extend(
            page.into_iter()
                .filter(|e| jit_domain::activity::PASS_KINDS.contains(&e.kind.as_str())),
        );
    }
    let recorded = jit_domain::activity::recorded_digests(
        recorded_events.iter().map(|e| (e.kind.as_str(), &e.data)),
    );
    let mut kept = Vec::new();
    for subject in recorded.keys() {
        kept.push((subject.clone(), store.activity(subject).await?));
    }
    activity_verified(&recorded, &kept)
}

/// Each subject's kept events against the digest the chain recorded.
fn activity_verified(
    recorded: &std::collections::BTreeMap<String, String>,
    kept: &[(String, Vec<jit_domain::ActivityEvent>)],
) -> anyhow::Result<ExitCode> {
    let mismatches = jit_domain::activity::digest_mismatches(
        recorded,
        kept.iter().map(|(s, e)| (s.as_str(), e.as_slice())),
    );
    if !mismatches.is_empty() {
        eprintln!(
            "activity does not match the digest the audit chain recorded for: {}",
            mismatches.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    println!(
        "activity verified: {} sets match the digests in the chain",
        recorded.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// An export file (JSON lines of events, the activity sets of the grants
/// in it, and checkpoints).
fn verify_file(
    path: &Path,
    trusted: Option<String>,
    trust_embedded_key: bool,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut events, mut checkpoints, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), n + 1))?;
        if let Some(set) = value.get("activity") {
            let subject = set["subject"].as_str().unwrap_or_default().to_owned();
            let found: Vec<jit_domain::ActivityEvent> =
                serde_json::from_value(set["events"].clone()).with_context(|| {
                    format!("{} line {}: an activity set", path.display(), n + 1)
                })?;
            kept.push((subject, found));
            continue;
        }
        match value.get("checkpoint") {
            Some(cp) => checkpoints.push(
                serde_json::from_value(cp.clone())
                    .with_context(|| format!("{} line {}: a checkpoint", path.display(), n + 1))?,
            ),
            None => events.push(
                serde_json::from_value(value)
                    .with_context(|| format!("{} line {}: an event", path.display(), n + 1))?,
            ),
        }
    }
    let has_trusted = trusted.is_some();
    match jit_store::verify_slice(&events, &checkpoints, trusted.as_deref()) {
        Ok(r) => {
            if let Some(refused) =
                untrusted_checkpoints(r.checkpoints, has_trusted, trust_embedded_key)
            {
                return Ok(refused);
            }
            println!(
                "export verified: {} events ({} gaps where the export was filtered), {} checkpoints ({} matched an event in the file)",
                r.events, r.gaps, r.checkpoints, r.checkpoints_matched
            )
        }
        Err(broken) => {
            eprintln!("{broken}");
            return Ok(ExitCode::from(2));
        }
    }
    let recorded: Vec<&jit_app::AuditEvent> = events
        .iter()
        .filter(|e: &&jit_app::AuditEvent| {
            jit_domain::activity::PASS_KINDS.contains(&e.kind.as_str())
        })
        .collect();
    let recorded =
        jit_domain::activity::recorded_digests(recorded.iter().map(|e| (e.kind.as_str(), &e.data)));
    activity_verified(&recorded, &kept)
}

/// The filtered events as JSON lines, then the checkpoints they reach.
async fn export(
    config: &Config,
    filter: jit_app::AuditFilter,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let store = open_store(config, false).await?;
    let app = crate::bare_app(config, store)?;
    let mut sink: Box<dyn std::io::Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (mut cursor, mut written, mut last_seq) = (0, 0u64, 0);
    // Each activity subject's pass events in the export.
    let mut passes: std::collections::BTreeMap<String, Vec<jit_app::AuditEvent>> =
        std::collections::BTreeMap::new();
    loop {
        let page = app.audit_page(&filter, cursor, 1000).await?;
        for e in &page.events {
            writeln!(sink, "{}", serde_json::to_string(e)?)?;
            last_seq = e.seq;
            written += 1;
            if jit_domain::activity::PASS_KINDS.contains(&e.kind.as_str())
                && let Some(subject) = e.data["subject"].as_str()
            {
                passes
                    .entry(subject.to_owned())
                    .or_default()
                    .push(e.clone());
            }
        }
        match page.next_cursor {
            Some(next) => cursor = next,
            None => break,
        }
    }
    // What was done with each grant in the export: the set as its last
    // exported pass recorded it (the events every pass up to it found), so
    // an auditor can recompute the digest.
    for (subject, exported) in &passes {
        let last = exported.iter().map(|e| e.seq).max().unwrap_or_default();
        let all_passes = match exported.iter().find_map(|e| e.grant) {
            Some(grant) => app.grant_audit(grant).await?,
            None => exported.clone(),
        };
        let found: std::collections::BTreeSet<&str> = all_passes
            .iter()
            .filter(|e| e.seq <= last)
            .filter(|e| jit_domain::activity::PASS_KINDS.contains(&e.kind.as_str()))
            .filter(|e| e.data["subject"].as_str() == Some(subject.as_str()))
            .flat_map(|e| e.data["new_ids"].as_array().into_iter().flatten())
            .filter_map(serde_json::Value::as_str)
            .collect();
        let mut events = app.store.activity(subject).await?;
        events.retain(|e| found.contains(e.id.as_str()));
        writeln!(
            sink,
            "{}",
            serde_json::json!({"activity": {"subject": subject, "events": events}})
        )?;
    }
    for cp in app.audit_checkpoints().await? {
        if cp.seq <= last_seq {
            writeln!(sink, "{}", serde_json::json!({"checkpoint": cp}))?;
        }
    }
    sink.flush()?;
    eprintln!("{written} events exported");
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` readable by its owner only, and writes `content`.
fn write_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(file, "{content}")?;
    Ok(())
}
