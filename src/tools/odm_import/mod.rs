//! `edc-ingest odm import FILE`: an ODM 1.3 ClinicalData file, one message per form instance.
//!
//! Two passes over the file, each streaming (the reader holds one piece of XML and one form
//! instance; the publisher a bounded window of confirms), so memory does not grow with the file:
//!
//! 1. [`check`] reads the whole file and maps every form instance against the study protocols
//!    ([`crate::pipeline::odm::map`]): a file refused as a whole (the XML reader's refusals, a
//!    Dataset-XML file...) ends here and nothing is published; a form refused by the reader or
//!    the mapping is counted and listed. A dry run also validates each form as the daemon would
//!    with nothing stored yet (`apply(&Value::Null, &delta)`, then `validate_items`).
//! 2. [`publish`] reads it again and publishes the forms that passed, each as its own ODM
//!    document ([`message`]), persistent, with publisher confirms, all under one upload batch
//!    whose size the first pass counted.
//!
//! The file must not change between the passes: its size and modification time are compared, and
//! the second pass must meet the same forms, else the import fails (what was published stays
//! published, and is recognised as such by its message ids when the import is run again).

pub mod message;
mod publisher;
pub mod report;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;
use uuid::Uuid;

use crate::config::{AmqpSettings, RetrySettings};
use crate::odm::clinical::{ClinicalReader, ReadError};
use crate::odm::model::FormInstance;
use crate::odm::xml::{FileError, Limits};
use crate::pipeline::Pseudonymizer;
use crate::pipeline::odm::{OdmDelta, OdmForm, Refusal, apply, map};
use crate::pipeline::validate::validate_items;
use crate::printable::Printable;
use crate::protocol::Registry;

use super::progress::Progress;
pub use message::{Batch, Defaults};
pub use report::{Located, Report, Validation};

/// Bytes read from the file at once.
const READ_BUFFER: usize = 256 * 1024;

/// How an import is to be made.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Parse, map and validate; publish nothing.
    pub dry_run: bool,
    pub defaults: Defaults,
    pub limits: Limits,
}

/// What every form is mapped with.
pub struct Context<'a> {
    pub registry: &'a Registry,
    pub pseudonymizer: &'a Pseudonymizer,
    pub options: &'a Options,
}

/// A form instance that passed: its mapping and the document to publish.
struct Passed {
    mapped: OdmForm,
    document: Vec<u8>,
}

/// The form instance filled in, mapped and written; or why it is refused.
fn examine(mut form: FormInstance, ctx: &Context<'_>) -> Result<Passed, Located> {
    ctx.options.defaults.fill(&mut form);
    let mapped = map(&form, ctx.registry, ctx.pseudonymizer).map_err(|r: Refusal| {
        let reason = r.to_string();
        Located::new(r.at, r.code, reason)
    })?;
    let document = crate::odm::write::write(&form).map_err(|e| {
        Located::new(
            form.at,
            "not_writable",
            format!(
                "the form at {} (FormOID {:?}) is refused: it cannot be written back as ODM ({e})",
                form.at,
                Printable(&form.form_oid)
            ),
        )
    })?;
    Ok(Passed { mapped, document })
}

/// Validates a mapped form as the daemon would with nothing stored yet (dry run).
fn validate(passed: &Passed, validation: &mut Validation) -> Result<(), Located> {
    let m = &passed.mapped;
    if matches!(m.delta, OdmDelta::Remove | OdmDelta::Context) {
        validation.not_validated += 1;
        return Ok(());
    }
    let items = match apply(&Value::Null, &m.delta) {
        Value::Object(items) => items,
        _ => Default::default(),
    };
    match validate_items(&m.protocol, m.context(), items) {
        Ok(checked) if checked.findings.is_empty() => validation.valid += 1,
        Ok(checked) => {
            validation.queried += 1;
            for f in checked.findings {
                *validation.findings.entry(f.check).or_default() += 1;
            }
        }
        Err(rejected) => {
            validation.invalid += 1;
            let reason = format!(
                "the form at {} (FormOID {:?}) is refused: {}",
                m.at,
                Printable(&m.form),
                rejected.reason
            );
            return Err(Located::new(m.at, "invalid", reason));
        }
    }
    Ok(())
}

/// A file's size and modification time: what says whether it changed between the passes.
pub(crate) type Stamp = (u64, Option<std::time::SystemTime>);

/// Opens the file for a pass: buffered, with its [`Stamp`].
fn open(path: &Path) -> std::io::Result<(BufReader<File>, Stamp)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (the import reads it twice)",
        ));
    }
    let stamp = (meta.len(), meta.modified().ok());
    Ok((BufReader::with_capacity(READ_BUFFER, file), stamp))
}

/// The first pass (see the module's text): the report, with `publishable` counted.
pub fn check(path: &Path, ctx: &Context<'_>, progress: &Progress) -> std::io::Result<Report> {
    let (input, stamp) = open(path)?;
    let mut report = Report {
        stamp: Some(stamp),
        dry_run: ctx.options.dry_run,
        validation: ctx.options.dry_run.then(Validation::default),
        ..Report::default()
    };
    let mut reader = ClinicalReader::new(input, ctx.options.limits);
    for read in reader.by_ref() {
        match read {
            Err(ReadError::File(e)) => {
                report.file_refused = Some(Located::new(e.at, "file_refused", e.to_string()));
                break;
            }
            Err(ReadError::Form(e)) => {
                report.refuse(Located::new(e.at, e.problem.code(), e.to_string()));
            }
            Ok(form) => {
                let passed = examine(form, ctx).and_then(|p| match &mut report.validation {
                    Some(v) => validate(&p, v).map(|()| p),
                    None => Ok(p),
                });
                match passed {
                    Ok(p) => {
                        report.tally.add(&Ok(p.mapped));
                        report.publishable += 1;
                    }
                    Err(located) => report.refuse(located),
                }
            }
        }
        progress.inc(1);
    }
    let summary = reader.summary();
    report.bytes = reader.bytes_read();
    report.subjects = summary.subjects;
    report.forms_read = summary.forms + summary.refused;
    report.skipped = (&summary.skipped).into();
    report.late_audit_records = summary.late_audit_records;
    Ok(report)
}

/// One message to publish: a form instance that passed, as its own ODM document.
pub struct Message {
    pub id: Uuid,
    pub record_id: Uuid,
    pub document: Vec<u8>,
}

/// The messages of the forms that pass, in file order (the second pass's, and what the tests
/// compare across imports); an error when the file itself turns out refused.
pub struct Messages<'a, R: BufRead> {
    reader: ClinicalReader<R>,
    ctx: &'a Context<'a>,
    /// Form instances read so far, refused ones included.
    pub forms: u64,
}

impl<'a, R: BufRead> Messages<'a, R> {
    pub fn new(input: R, ctx: &'a Context<'a>) -> Messages<'a, R> {
        Messages {
            reader: ClinicalReader::new(input, ctx.options.limits),
            ctx,
            forms: 0,
        }
    }
}

impl<R: BufRead> Iterator for Messages<'_, R> {
    type Item = Result<Message, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let form = match self.reader.next()? {
                Ok(form) => form,
                Err(ReadError::Form(_)) => {
                    self.forms += 1;
                    continue;
                }
                Err(ReadError::File(e)) => return Some(Err(e)),
            };
            self.forms += 1;
            if let Ok(passed) = examine(form, self.ctx) {
                return Some(Ok(Message {
                    id: message::message_id(passed.mapped.record_id, &passed.document),
                    record_id: passed.mapped.record_id,
                    document: passed.document,
                }));
            }
        }
    }
}

/// The second pass (see the module's text): publishes the forms the first pass let through,
/// counting them in `report.published` as the broker confirms them.
pub async fn publish(
    path: &Path,
    ctx: &Context<'_>,
    amqp: &AmqpSettings,
    retry: &RetrySettings,
    report: &mut Report,
    progress: &Progress,
) -> anyhow::Result<()> {
    let (input, stamp) = open(path)?;
    let changed = || anyhow::anyhow!("the file changed while it was imported");
    if report.stamp != Some(stamp) {
        return Err(changed());
    }
    let batch = Batch {
        id: Uuid::new_v4(),
        size: report.publishable,
    };
    report.queue = Some(amqp.queue.clone());
    report.batch_id = Some(batch.id.to_string());
    let mut publisher = publisher::Publisher::open(amqp, retry).await?;
    let result = async {
        let mut messages = Messages::new(input, ctx);
        let mut sent = 0u64;
        for message in messages.by_ref() {
            let message = message.map_err(|_| changed())?;
            let props = message::properties(message.id, &batch);
            let confirmed = publisher.send(&message.document, props).await?;
            report.published += confirmed;
            progress.inc(confirmed);
            sent += 1;
        }
        if messages.forms != report.forms_read || sent != report.publishable {
            return Err(changed());
        }
        Ok(())
    }
    .await;
    let confirmed = publisher.finish(result.is_ok()).await;
    let n = confirmed.as_ref().copied().unwrap_or(0);
    report.published += n;
    progress.inc(n);
    progress.finish();
    result.and(confirmed.map(|_| ()))
}

/// An import's report, and why publishing failed part-way if it did (then `report.published`
/// says how many were confirmed before).
pub struct Imported {
    pub report: Report,
    pub failed: Option<anyhow::Error>,
}

/// Both passes (the second only when the first let forms through and it is not a dry run). An
/// error: the file could not be read at all.
pub async fn import(
    path: &Path,
    ctx: &Context<'_>,
    amqp: &AmqpSettings,
    retry: &RetrySettings,
) -> std::io::Result<Imported> {
    let checking = Progress::counter("forms checked");
    let mut report = check(path, ctx, &checking)?;
    checking.finish();
    drop(checking);
    if report.file_refused.is_some() || ctx.options.dry_run || report.publishable == 0 {
        return Ok(Imported {
            report,
            failed: None,
        });
    }
    let publishing = Progress::bar(report.publishable, "published");
    let failed = publish(path, ctx, amqp, retry, &mut report, &publishing)
        .await
        .err();
    drop(publishing);
    Ok(Imported { report, failed })
}

#[cfg(test)]
mod tests;
