//! Kanidm replication certificates: read from kanidmd's output and checked
//! before they go into a manifest.
//!
//! `kanidmd show-replication-certificate` prints `certificate: "…"`: the
//! node's replication identity, the DER of an X.509 certificate in URL-safe
//! base64 (kanidm server/core/src/repl/, `ReplCertificate`; the partner's
//! `partner_cert` in server.toml is read back the same way). A garbled value
//! in the ConfigMap would stop replication at the next restart, so what is
//! read is decoded and parsed here, and shown (subject, validity) in the
//! plan before anything is written.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde::Serialize;
use x509_cert::Certificate;
use x509_cert::der::Decode;

/// Why a certificate was refused. Each names what was read (shortened).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "no certificate in {source_name}: expected kanidmd's line `certificate: \"MII…\"` or the bare value; read {read}"
    )]
    Missing { source_name: String, read: String },
    #[error(
        "the certificate from {source_name} is not URL-safe base64 ({why}); read {read}. kanidmd prints it as `certificate: \"…\"`: copy the value between the quotes"
    )]
    Base64 {
        source_name: String,
        why: String,
        read: String,
    },
    #[error(
        "the certificate from {source_name} decodes to {len} bytes that are not a DER X.509 certificate ({why}); read {read}"
    )]
    NotX509 {
        source_name: String,
        len: usize,
        why: String,
        read: String,
    },
}

/// A checked certificate: the value as it goes into `partner_cert`, and what
/// it says.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ReplCert {
    /// URL-safe base64 of the DER, as kanidmd printed it.
    pub value: String,
    /// RFC 4514 form, e.g. `CN=kanidm-1.kanidm:8444,O=kanidm-1-key`.
    pub subject: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// The first 16 hex digits of the DER's SHA-256, to tell two apart.
    pub fingerprint: String,
}

impl ReplCert {
    /// One line for the plan.
    pub fn describe(&self) -> String {
        format!(
            "subject {}, valid {} to {}, SHA-256 {}…",
            self.subject, self.not_before, self.not_after, self.fingerprint
        )
    }
}

/// At most 60 characters of what was read, for an error.
fn shorten(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return "nothing".into();
    }
    let mut s: String = t.chars().take(60).collect();
    if t.chars().count() > 60 {
        s.push('…');
    }
    format!("{s:?}")
}

/// The certificate value in kanidmd's output (`certificate: "…"`, also among
/// log lines) or a bare value.
pub fn value_in(text: &str, source_name: &str) -> Result<String, CertError> {
    // kanidmd logs it (`info!(certificate = ?cert)`, server/daemon/src/
    // main.rs) through tracing-forest, to stdout, after a prefix:
    // `… INFO     ｉ [info]:  | certificate: "MII…"`.
    let from_line = text.lines().find_map(|l| {
        let rest = &l[l.find("certificate:")? + "certificate:".len()..];
        Some(rest.trim().trim_matches('"').to_string())
    });
    let value = match from_line {
        Some(v) => v,
        None => {
            let t = text.trim().trim_matches('"');
            if t.lines().count() == 1 && !t.contains(char::is_whitespace) {
                t.to_string()
            } else {
                String::new()
            }
        }
    };
    if value.is_empty() {
        return Err(CertError::Missing {
            source_name: source_name.into(),
            read: shorten(text),
        });
    }
    Ok(value)
}

/// Decodes and parses a certificate value.
pub fn check(value: &str, source_name: &str) -> Result<ReplCert, CertError> {
    let base64_err = |why: String| CertError::Base64 {
        source_name: source_name.into(),
        why,
        read: shorten(value),
    };
    if value.contains(['+', '/']) {
        return Err(base64_err(
            "it has `+` or `/`: standard base64, which kanidm does not read".into(),
        ));
    }
    // As kanidm reads `partner_cert` (x509b64): unpadded, else padded
    // (kanidmd 1.9 prints it padded, later versions without).
    let der = URL_SAFE_NO_PAD
        .decode(value)
        .or_else(|_| URL_SAFE.decode(value))
        .map_err(|e| base64_err(e.to_string()))?;
    let cert = Certificate::from_der(&der).map_err(|e| CertError::NotX509 {
        source_name: source_name.into(),
        len: der.len(),
        why: e.to_string(),
        read: shorten(value),
    })?;
    let tbs = &cert.tbs_certificate;
    let time = |t: &x509_cert::time::Time| {
        jiff::Timestamp::from_second(t.to_unix_duration().as_secs() as i64)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| "?".into())
    };
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&der);
    let fingerprint: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(ReplCert {
        value: value.to_string(),
        subject: tbs.subject.to_string(),
        not_before: time(&tbs.validity.not_before),
        not_after: time(&tbs.validity.not_after),
        fingerprint,
    })
}

/// `value_in` then `check`.
pub fn read(text: &str, source_name: &str) -> Result<ReplCert, CertError> {
    check(&value_in(text, source_name)?, source_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real EC certificate (openssl req -x509, P-256), as kanidmd prints it.
    const CERT: &str = include_str!("../fixtures/kanidm-1.certificate");

    #[test]
    fn kanidmd_output_and_bare_values_are_read() {
        let c = read(CERT, "the fixture").unwrap();
        assert!(c.subject.contains("CN=kanidm-1.kanidm:8444"), "{c:?}");
        assert!(c.not_before < c.not_after);
        let bare = value_in(CERT, "x").unwrap();
        assert_eq!(read(&bare, "x").unwrap(), c);
        assert_eq!(read(&format!("\"{bare}\"\n"), "x").unwrap(), c);
        // kanidmd 1.9 pads it.
        let der = URL_SAFE_NO_PAD.decode(&bare).unwrap();
        let padded = URL_SAFE.encode(der);
        assert!(padded.ends_with('='));
        assert_eq!(read(&padded, "x").unwrap().subject, c.subject);
        // As kanidmd's tracing-forest logger prints it, among other lines.
        let logged = format!(
            "00000000-0000-0000-0000-000000000000 INFO     ｉ [info]: Starting Kanidmd\n00000000-0000-0000-0000-000000000000 INFO     ｉ [info]:  | {CERT}"
        );
        assert_eq!(read(&logged, "x").unwrap(), c);
    }

    #[test]
    fn garbled_values_are_named() {
        let bare = value_in(CERT, "x").unwrap();
        let e = read("", "stdin").unwrap_err().to_string();
        assert!(e.contains("no certificate in stdin"), "{e}");
        let e = read("certificate: \"MII+/abc\"", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("standard base64"), "{e}");
        let e = read("certificate: \"MII%%\"", "f").unwrap_err().to_string();
        assert!(
            e.contains("not URL-safe base64") && e.contains("MII%%"),
            "{e}"
        );
        // Cut short: still base64, no longer a certificate.
        let cut = &bare[..bare.len() / 8 * 4];
        let e = read(cut, "f").unwrap_err().to_string();
        assert!(e.contains("not a DER X.509 certificate"), "{e}");
        let e = read("hello world\nsecond line", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no certificate"), "{e}");
    }
}
