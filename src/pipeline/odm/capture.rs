//! When a form instance was captured and by whom, from what the ODM file says: the capture time
//! picks the protocol version in force and becomes the record's `captured_at`; the AuditRecord that
//! gave it also gives `entered_by` and the reason for change.
//!
//! The capture time is the first readable one of:
//! 1. the form's nearest AuditRecord's DateTimeStamp (the FormData's own, else its
//!    StudyEventData's, else its SubjectData's: [`FormInstance::audit`]);
//! 2. the latest DateTimeStamp of the AuditRecords inside the form (on item groups or items, as
//!    CDISC's examples and Rave's feeds write them): the moment the state given was reached;
//! 3. the file's AsOfDateTime;
//! 4. the file's CreationDateTime (which ODM requires of every file).
//!
//! With none of them the form is refused: inventing a capture time (the time it was received, say)
//! would make which protocol version validates it, and the audit trail's evidence, depend on when
//! the file happened to be imported, and `odm import --dry-run` could not predict the daemon.
//!
//! A date-time is ISO 8601 `YYYY-MM-DDThh:mm:ss[.f]` with an optional offset (`Z`, `+hh:mm`); one
//! without offset (most real exports) is read as UTC, and its date as written is the capture date.
//! One that does not read is passed over (counted in [`Capture::unreadable`]), never guessed at.

use chrono::{DateTime, FixedOffset, NaiveDateTime};

use crate::odm::model::{AuditRecord, FormInstance};

/// `entered_by` when no AuditRecord in scope names a user.
pub const UNKNOWN_USER: &str = "unknown";

/// Where the capture time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaptureSource {
    /// The nearest AuditRecord of the form (its own, its event's or its subject's).
    FormAudit,
    /// The latest AuditRecord inside the form (on an item group or an item).
    ItemAudit,
    /// The file's AsOfDateTime.
    AsOf,
    /// The file's CreationDateTime.
    Created,
}

impl CaptureSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureSource::FormAudit => "form_audit",
            CaptureSource::ItemAudit => "item_audit",
            CaptureSource::AsOf => "as_of",
            CaptureSource::Created => "created",
        }
    }
}

/// The capture time and the audit details that go with it.
#[derive(Clone)]
pub struct Capture {
    pub at: DateTime<FixedOffset>,
    pub source: CaptureSource,
    /// The UserOID of the AuditRecord that gave the time, else of the form's nearest one, else
    /// [`UNKNOWN_USER`]. As the file writes it (uploader text: never printed raw).
    pub entered_by: String,
    /// Free text, so protected: the store keeps only its pseudonym; never logged.
    pub reason_for_change: Option<String>,
    /// Date-times present in scope that do not read as ISO 8601 (passed over).
    pub unreadable: u32,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("at", &self.at)
            .field("source", &self.source)
            .field(
                "reason_for_change",
                &self.reason_for_change.as_ref().map(|_| "<redacted>"),
            )
            .field("unreadable", &self.unreadable)
            .finish_non_exhaustive()
    }
}

/// Why no capture time could be found (our words).
pub fn no_capture_reason(unreadable: u32) -> String {
    if unreadable == 0 {
        "the form has no capture time: no AuditRecord DateTimeStamp in scope, no AsOfDateTime \
         and no CreationDateTime (which ODM requires)"
            .to_string()
    } else {
        format!(
            "the form has no capture time: {unreadable} date-time(s) in scope, none of them an \
             ISO 8601 date-time (YYYY-MM-DDThh:mm:ss, offset optional)"
        )
    }
}

/// See the module's text. `Err` holds the count of unreadable date-times seen.
pub fn capture(form: &FormInstance) -> Result<Capture, u32> {
    let mut unreadable = 0u32;
    let mut read = |text: Option<&str>| -> Option<DateTime<FixedOffset>> {
        let text = text?;
        let at = parse_date_time(text);
        unreadable += u32::from(at.is_none());
        at
    };
    let form_audit = form.audit.as_ref();
    let own = read(form_audit.and_then(|a| a.date_time.as_deref()));
    // Every item's audit is read (and counted) even when the form's gave the time.
    let mut latest: Option<(DateTime<FixedOffset>, &AuditRecord)> = None;
    for audit in form.items.iter().filter_map(|i| i.audit.as_ref()) {
        if let Some(at) = read(audit.date_time.as_deref())
            && latest.is_none_or(|(best, _)| at > best)
        {
            latest = Some((at, audit));
        }
    }
    let as_of = read(form.as_of.as_deref());
    let created = read(form.created.as_deref());
    let (at, source, chosen) = match (own, latest, as_of, created) {
        (Some(at), ..) => (at, CaptureSource::FormAudit, form_audit),
        (None, Some((at, audit)), ..) => (at, CaptureSource::ItemAudit, Some(audit)),
        (None, None, Some(at), _) => (at, CaptureSource::AsOf, None),
        (None, None, None, Some(at)) => (at, CaptureSource::Created, None),
        (None, None, None, None) => return Err(unreadable),
    };
    let user = |a: Option<&AuditRecord>| a.and_then(|a| a.user_oid.clone());
    let entered_by = user(chosen)
        .or_else(|| user(form_audit))
        .unwrap_or_else(|| UNKNOWN_USER.to_string());
    let reason = |a: &AuditRecord| a.reason_for_change.clone().filter(|r| !r.trim().is_empty());
    let reason_for_change = chosen
        .and_then(reason)
        .or_else(|| form_audit.and_then(reason))
        .or_else(|| {
            form.items
                .iter()
                .filter_map(|i| i.audit.as_ref())
                .find_map(reason)
        });
    Ok(Capture {
        at,
        source,
        entered_by,
        reason_for_change,
        unreadable,
    })
}

/// An ISO 8601 date-time with seconds (`YYYY-MM-DDThh:mm:ss[.f]`), offset optional (none: UTC).
/// Surrounding XML whitespace is ignored, as XML Schema's dateTime does.
pub fn parse_date_time(text: &str) -> Option<DateTime<FixedOffset>> {
    let t = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    // Every field two digits (four for the year): chrono alone would also take `2024-3-5T9:06:45`.
    let b = t.as_bytes();
    let shaped = b.len() >= 19
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if !shaped {
        return None;
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Some(at);
    }
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc().fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{document, instances};
    use super::*;

    /// The capture of the only form of a Transactional file with `root` attributes, the subject's
    /// and the form's AuditRecords and `groups`.
    fn of(root: &str, subject_audit: &str, form_audit: &str, groups: &str) -> Result<Capture, u32> {
        let doc = document(
            "Snapshot",
            "ST.MAP",
            &format!(
                "<SubjectData SubjectKey=\"S\">{subject_audit}<StudyEventData StudyEventOID=\"SE\">\
                 <FormData FormOID=\"F\">{form_audit}{groups}</FormData></StudyEventData></SubjectData>"
            ),
        )
        .replace(" CreationDateTime=\"2024-05-10T09:00:00\"", root);
        capture(&instances(&doc)[0])
    }

    fn audit(user: &str, stamp: &str, reason: &str) -> String {
        let user = if user.is_empty() {
            String::new()
        } else {
            format!("<UserRef UserOID=\"{user}\"/>")
        };
        let stamp = if stamp.is_empty() {
            String::new()
        } else {
            format!("<DateTimeStamp>{stamp}</DateTimeStamp>")
        };
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!("<ReasonForChange>{reason}</ReasonForChange>")
        };
        format!("<AuditRecord>{user}{stamp}{reason}</AuditRecord>")
    }

    fn row(key: &str, audit: &str) -> String {
        format!(
            "<ItemGroupData ItemGroupOID=\"IG\" ItemGroupRepeatKey=\"{key}\">{audit}\
             <ItemData ItemOID=\"I\" Value=\"1\"/></ItemGroupData>"
        )
    }

    const FILE: &str =
        " CreationDateTime=\"2024-05-10T09:00:00\" AsOfDateTime=\"2024-05-09T00:00:00Z\"";

    #[test]
    fn the_capture_time_comes_from_the_nearest_readable_source() {
        // The latest is not the last in the document.
        let rows = row("1", &audit("U.A", "2024-03-04T10:00:00", "first"))
            + &row("3", &audit("U.C", "2024-03-05T10:00:00", ""))
            + &row("2", &audit("U.B", "2024-03-05T14:00:00+05:00", "second"));
        // The form's own AuditRecord first.
        let c = of(FILE, "", &audit("U.F", "2024-03-01T08:00:00Z", ""), &rows).unwrap();
        assert_eq!(
            (c.source, c.at.to_rfc3339()),
            (CaptureSource::FormAudit, "2024-03-01T08:00:00+00:00".into())
        );
        assert_eq!(c.entered_by, "U.F");
        assert_eq!(
            c.reason_for_change.as_deref(),
            Some("first"),
            "no reason of its own: the first given"
        );
        // Else its subject's (the reader gives the nearest of form, event, subject).
        let c = of(FILE, &audit("U.S", "2024-02-01T08:00:00Z", "why"), "", "").unwrap();
        assert_eq!(
            (c.source, c.entered_by.as_str()),
            (CaptureSource::FormAudit, "U.S")
        );
        assert_eq!(c.reason_for_change.as_deref(), Some("why"));
        // Else the latest inside the form, as an instant (row 2 says 14:00 but is 09:00 UTC, row 3 is 10:00 UTC).
        let c = of(FILE, "", "", &rows).unwrap();
        assert_eq!(
            (c.source, c.entered_by.as_str()),
            (CaptureSource::ItemAudit, "U.C")
        );
        assert_eq!(c.at.to_rfc3339(), "2024-03-05T10:00:00+00:00");
        assert_eq!(c.reason_for_change.as_deref(), Some("first"));
        // A form AuditRecord without a time names the user when the time comes from elsewhere.
        let c = of(
            FILE,
            "",
            &audit("U.F", "", ""),
            &row("1", &audit("", "2024-03-04T10:00:00", "")),
        )
        .unwrap();
        assert_eq!(
            (c.source, c.entered_by.as_str()),
            (CaptureSource::ItemAudit, "U.F")
        );
        let c = of(FILE, "", &audit("U.F", "", ""), &row("1", "")).unwrap();
        assert_eq!(
            (c.source, c.entered_by.as_str()),
            (CaptureSource::AsOf, "U.F")
        );
        assert_eq!(c.at.to_rfc3339(), "2024-05-09T00:00:00+00:00");
        // Else the file's dates; nobody named.
        let c = of(
            " CreationDateTime=\"2024-05-10T09:00:00\"",
            "",
            "",
            &row("1", ""),
        )
        .unwrap();
        assert_eq!(
            (c.source, c.entered_by.as_str()),
            (CaptureSource::Created, UNKNOWN_USER)
        );
        assert_eq!(
            c.at.to_rfc3339(),
            "2024-05-10T09:00:00+00:00",
            "no offset: UTC"
        );
        assert!(c.reason_for_change.is_none());
        assert_eq!(of("", "", "", &row("1", "")).err(), Some(0));
    }

    #[test]
    fn unreadable_date_times_are_passed_over_and_counted() {
        // CDISC's ODM 1.1 example writes these.
        let bad = audit("U.F", "2001-05-31-T10:08:40-05:00", "");
        let rows = row("1", &audit("U.A", "2001-05-31T9:06:45-05:00", ""))
            + &row("2", &audit("U.B", "2024-03-04T10:00:00", ""));
        let c = of(FILE, "", &bad, &rows).unwrap();
        assert_eq!(
            (c.source, c.unreadable, c.entered_by.as_str()),
            (CaptureSource::ItemAudit, 2, "U.B")
        );
        let c = of(" CreationDateTime=\"2024-13-01T00:00:00\"", "", &bad, "").unwrap_err();
        assert_eq!(c, 2);
    }

    #[test]
    fn date_times_read_as_iso_8601_with_seconds() {
        for (text, expected) in [
            ("2024-03-02T08:30:00", "2024-03-02T08:30:00+00:00"),
            ("2024-03-02T08:30:00Z", "2024-03-02T08:30:00+00:00"),
            ("2024-03-02T08:30:00+01:00", "2024-03-02T08:30:00+01:00"),
            (
                "2018-11-08T08:55:08.668-00:00",
                "2018-11-08T08:55:08.668+00:00",
            ),
            ("2021-09-09T12:56:57.639Z", "2021-09-09T12:56:57.639+00:00"),
            (" 2024-03-02T08:30:00\n", "2024-03-02T08:30:00+00:00"),
        ] {
            assert_eq!(
                parse_date_time(text).map(|d| d.to_rfc3339()).as_deref(),
                Some(expected),
                "{text:?}"
            );
        }
        for text in [
            "",
            "2024-03-02",
            "2024-03-02T08:30",
            "2001-05-31-T10:08:40-05:00",
            "2001-05-31T9:06:45-05:00",
            "2024-3-02T08:30:00",
            "2024-13-01T00:00:00",
            "2024-02-30T00:00:00",
            "2024-03-02T24:00:00",
            "2024-03-02 08:30:00",
            "2024-03-02T08:30:00+25:00",
            "2024-03-02T08:30:00 junk",
            "２０２４-03-02T08:30:00",
        ] {
            assert!(parse_date_time(text).is_none(), "{text:?}");
        }
    }
}
