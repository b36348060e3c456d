//! S3 errors as one line a person can act on: a refusal with one clear cause (a missing
//! bucket, an unknown key, a wrong secret, another region) says what to fix; any other answer
//! gives the operation, the HTTP status and the S3 code; a call that got no answer gives the
//! system's reason (`Connection refused`), never the HTTP layers wrapped around it.
//!
//! What a server sends is read, never obeyed: only its first [`MAX_SERVER_TEXT`] bytes are
//! looked at, however long the body, and every character that could steer a terminal (escape
//! sequences, bidirectional overrides) is shown escaped. A region it names is used in advice
//! only when it is spelled like one.

use super::{MAX_MESSAGE, S3Backend};
use crate::error::Error;
use opendal::ErrorKind as DalKind;
use std::fmt::{Display, Write as _};
use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

/// Most bytes of anything a server sent (an error body, an error's display with the response
/// head) that are looked at: a store answering with a page of megabytes costs no more work or
/// memory than this.
const MAX_SERVER_TEXT: usize = 8 << 10;

impl S3Backend {
    /// An error met while a body streamed in: opendal's own when it carries one, so its kind (a
    /// missing object, a temporary failure) is kept.
    pub(super) fn body_error(&self, name: &str, error: std::io::Error) -> Error {
        let kind = error.kind();
        match error
            .into_inner()
            .map(|inner| inner.downcast::<opendal::Error>())
        {
            Some(Ok(dal)) => self.storage_error(name, *dal),
            Some(Err(other)) => Error::Storage {
                name: name.to_string(),
                source: std::io::Error::new(kind, clip(&displayed(&other))),
            },
            None => Error::Storage {
                name: name.to_string(),
                source: std::io::Error::from(kind),
            },
        }
    }

    /// Maps an opendal error onto the library's kinds, keeping transient ones retryable, with
    /// [`S3Backend::render`]'s line as its message.
    pub(super) fn storage_error(&self, name: &str, error: opendal::Error) -> Error {
        let kind = match error.kind() {
            DalKind::NotFound => return Error::NotFound(name.to_string()),
            // A checksum the server rejected is damage on the wire: sending again may pass.
            _ if message(&error).contains("BadDigest") => ErrorKind::Other,
            _ if error.is_temporary() => ErrorKind::Other,
            DalKind::RateLimited => ErrorKind::Other,
            DalKind::PermissionDenied => ErrorKind::PermissionDenied,
            DalKind::RangeNotSatisfied => ErrorKind::UnexpectedEof,
            DalKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::InvalidInput,
        };
        Error::Storage {
            name: name.to_string(),
            source: std::io::Error::new(kind, self.render(&error)),
        }
    }

    /// One line for an opendal error. A refusal with one clear cause (a missing bucket, an
    /// unknown key, a wrong secret, another region) is named with what to fix; any other
    /// answer as the operation, the HTTP status and the S3 code and message; a call that got
    /// no answer as the operation and the innermost cause (`Connection refused (os error
    /// 111)`), never the wrappers above it or the request dump opendal's display carries.
    fn render(&self, error: &opendal::Error) -> String {
        let shown = displayed(error);
        let answer = Answer::of(error, &shown);
        if let Some(remedy) = self.remedy(error, &answer) {
            return clip(&remedy);
        }
        let mut line = match operation(&shown) {
            "" => String::new(),
            op => format!("{op}: "),
        };
        if let Some(status) = answer.status {
            line.push_str(&format!("HTTP {status}"));
            match (&answer.code, &answer.message) {
                (Some(code), Some(message)) => line.push_str(&format!(" {code}: {message}")),
                (Some(code), None) => line.push_str(&format!(" {code}")),
                // No S3 error document: a proxy's page, or nothing (a HEAD).
                (None, _) if !message(error).is_empty() => {
                    line.push_str(&format!(": {}", message(error)))
                }
                (None, _) => {}
            }
        } else if let Some(cause) = innermost(error) {
            let what = match message(error) {
                "send http request" => format!("cannot reach {}", self.location.endpoint),
                "read data from http response" => {
                    format!("the answer from {} broke off", self.location.endpoint)
                }
                other => other.to_string(),
            };
            line.push_str(&format!("{what}: {cause}"));
        } else {
            line.push_str(message(error));
        }
        clip(&line)
    }

    /// What to fix, for the refusals that have one clear cause; the status and S3 code follow
    /// in parentheses.
    fn remedy(&self, error: &opendal::Error, answer: &Answer) -> Option<String> {
        let bucket = &self.location.bucket;
        let code = answer.code.as_deref().unwrap_or_default();
        // A store that names the very region signed for has another complaint.
        let elsewhere = answer.region.as_deref() != Some(self.region.as_str());
        let fix = match code {
            "NoSuchBucket" => format!(
                "bucket {bucket} does not exist at {}: create it, or correct the bucket in the \
                 repository location",
                self.location.endpoint
            ),
            "InvalidAccessKeyId" | "NotSignedUp" => "the store does not know the access key id: \
                 check AWS_ACCESS_KEY_ID (or aws_access_key_id in the AWS_PROFILE profile)"
                .to_string(),
            "SignatureDoesNotMatch" => "the secret key does not belong to the access key id: \
                 check AWS_SECRET_ACCESS_KEY (or aws_secret_access_key in the AWS_PROFILE \
                 profile)"
                .to_string(),
            "InvalidToken" | "ExpiredToken" | "TokenRefreshRequired" => {
                "the session token is invalid or expired: renew the credentials \
                 (AWS_SESSION_TOKEN)"
                    .to_string()
            }
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => format!(
                "access to bucket {bucket} denied: the credentials lack permission for it (the \
                 key's or the bucket's policy)"
            ),
            "RequestTimeTooSkewed" => {
                "this machine's clock is more than 15 minutes off the store's: set it right"
                    .to_string()
            }
            "PermanentRedirect" | "IllegalLocationConstraintException" if elsewhere => {
                self.wrong_region(answer)
            }
            "AuthorizationHeaderMalformed" if answer.region.is_some() && elsewhere => {
                self.wrong_region(answer)
            }
            // A HEAD's refusal has no body: only its status tells.
            "" => match answer.status {
                Some(301) if elsewhere => self.wrong_region(answer),
                Some(403) => format!(
                    "access to bucket {bucket} refused: check the credentials (AWS_ACCESS_KEY_ID \
                     and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and their permissions"
                ),
                None if innermost(error)
                    .is_some_and(|cause| cause.contains("failed to load signing credential")) =>
                {
                    return Some(
                        "no S3 credentials found: set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in \
                         ~/.aws/credentials"
                            .to_string(),
                    );
                }
                _ => return None,
            },
            _ => return None,
        };
        let said: Vec<String> = answer
            .status
            .map(|status| format!("HTTP {status}"))
            .into_iter()
            .chain(answer.code.clone())
            .collect();
        Some(format!("{fix} ({})", said.join(" ")))
    }

    /// The remedy for a bucket in another region than the one requests are signed for: its
    /// region, when the store said it (`x-amz-bucket-region`, or AWS's "expecting 'REGION'").
    fn wrong_region(&self, answer: &Answer) -> String {
        let bucket = &self.location.bucket;
        let signed = &self.region;
        match (&answer.region, &self.location.region) {
            (Some(theirs), Some(ours)) => {
                let mut there = self.location.clone();
                there.endpoint =
                    there
                        .endpoint
                        .replacen(&format!(".{ours}."), &format!(".{theirs}."), 1);
                there.region = Some(theirs.clone());
                format!(
                    "bucket {bucket} is in region {theirs}, not {signed}: use the location \
                     {there}"
                )
            }
            (Some(theirs), None) => format!(
                "bucket {bucket} is in region {theirs}, not {signed}: set --s3-region {theirs} \
                 (or AWS_REGION)"
            ),
            // The host's region is signed for whatever --s3-region says: only the location can
            // change it.
            (None, Some(_)) => format!(
                "bucket {bucket} is not in region {signed}: correct the region in the location's \
                 host name (s3.REGION.amazonaws.com), which --s3-region does not override"
            ),
            (None, None) => format!(
                "bucket {bucket} is not in region {signed}: set its region with --s3-region (or \
                 AWS_REGION)"
            ),
        }
    }

    /// A HEAD is answered without a body, so its error carries no S3 code: a missing bucket
    /// looks like a missing object, and an unknown key like any refusal. The first such answer
    /// is asked again as a one-key listing (opendal's `check`), whose error has a body naming
    /// the reason; that error replaces the HEAD's when it names one. For a HEAD that found
    /// nothing only a missing bucket does: a listing may be refused where a read is not.
    pub(super) fn explained(&self, error: opendal::Error) -> opendal::Error {
        let answer = Answer::of(&error, &displayed(&error));
        let unexplained = answer.code.is_none()
            && (error.kind() == DalKind::NotFound
                || matches!(answer.status, Some(301 | 400 | 403)));
        if !unexplained || self.probed.swap(true, Ordering::Relaxed) {
            return error;
        }
        match self.run(0, self.operator.check()) {
            Err(probe) => {
                let code = Answer::of(&probe, &displayed(&probe)).code;
                let names_it = match error.kind() {
                    DalKind::NotFound => code.as_deref() == Some("NoSuchBucket"),
                    _ => code.is_some(),
                };
                if names_it { probe } else { error }
            }
            Ok(()) => error,
        }
    }
}

/// What the store answered, as far as an opendal error keeps it (opendal-service-s3's
/// `parse_error`): the HTTP status and the bucket's region (`x-amz-bucket-region`) from the
/// response head it puts in the error's context, which only its display shows; the S3 error
/// code and message from the XML body, which it makes the error's message in `Debug` form
/// (`S3Error { code: "NoSuchBucket", message: "…", resource: "…", request_id: "…" }`).
/// Each is read from the first [`MAX_SERVER_TEXT`] bytes only.
#[derive(Debug, Default, PartialEq, Eq)]
struct Answer {
    status: Option<u16>,
    code: Option<String>,
    message: Option<String>,
    region: Option<String>,
}

impl Answer {
    /// Reads `error`, whose display (cut, [`displayed`]) is `shown`.
    fn of(error: &opendal::Error, shown: &str) -> Answer {
        let body = message(error);
        let document = body.starts_with("S3Error {");
        let field = |start: &str, end: &str| {
            between(body, start, end)
                .filter(|value| document && !value.is_empty())
                .map(|value| value.replace("\\\"", "\"").replace("\\\\", "\\"))
        };
        let message = field(", message: \"", "\", resource: \"");
        Answer {
            status: between(shown, "response: Parts { status: ", ",").and_then(|s| s.parse().ok()),
            code: field("S3Error { code: \"", "\""),
            region: between(shown, "\"x-amz-bucket-region\": \"", "\"")
                .and_then(region_name)
                .or_else(|| {
                    // AuthorizationHeaderMalformed: "… the region 'us-east-1' is wrong;
                    // expecting 'eu-west-1'".
                    between(message.as_deref()?, "expecting '", "'").and_then(region_name)
                }),
            message,
        }
    }
}

/// `text` if it is spelled as S3 regions are (`eu-west-1`: 1 to 32 of `a-z`, `0-9` and `-`):
/// the region a server names is spliced into advice (a location to use), so anything else is
/// taken as no region named.
fn region_name(text: &str) -> Option<String> {
    let valid = (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| text.to_string())
}

/// The text between the first `start` in `text` and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The operation opendal's display names (`Unexpected (temporary) at stat, context: …`), or
/// nothing for an error cairn made.
fn operation(shown: &str) -> &str {
    let Some(at) = shown.find(") at ") else {
        return "";
    };
    let op = shown[at + ") at ".len()..]
        .split([',', ' '])
        .next()
        .unwrap_or_default();
    if op.contains("::") { "" } else { op }
}

/// The innermost cause of an error: what the system said (`Connection refused (os error
/// 111)`, `failed to lookup address information: …`, `invalid peer certificate: …`) under the
/// wrappers that each name a layer of the HTTP stack.
fn innermost(error: &opendal::Error) -> Option<String> {
    let mut cause = std::error::Error::source(error)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(displayed(cause))
}

/// An error's message (for an S3 error, the body or its parsed form), cut to
/// [`MAX_SERVER_TEXT`] bytes.
fn message(error: &opendal::Error) -> &str {
    cut(error.message(), MAX_SERVER_TEXT)
}

/// What `error` displays, cut to [`MAX_SERVER_TEXT`] bytes as it is written, so a huge body is
/// never copied whole. opendal writes the context (operation, response head) before the
/// message, so the status and headers survive a long body being cut.
fn displayed<T: Display + ?Sized>(error: &T) -> String {
    let mut out = Capped(String::new());
    // An error here only says the cap was reached; what fits is kept.
    let _ = write!(out, "{error}");
    out.0
}

/// A text sink that keeps the first [`MAX_SERVER_TEXT`] bytes written to it, then fails the
/// write, which ends the formatting.
struct Capped(String);

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = MAX_SERVER_TEXT.saturating_sub(self.0.len());
        self.0.push_str(cut(s, room));
        if s.len() > room {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

/// `text` up to `limit` bytes, cut on a character boundary.
fn cut(text: &str, limit: usize) -> &str {
    &text[..text.floor_char_boundary(limit)]
}

/// One line, and not a page long (a proxy's error page arrives as the message): runs of
/// whitespace become one space, each character that steers a terminal is shown escaped
/// ([`steers_terminal`]), and the line stops at [`MAX_MESSAGE`] bytes (escapes counted) with
/// `...`. Only the first [`MAX_SERVER_TEXT`] bytes of `text` are read, word by word.
fn clip(text: &str) -> String {
    let mut line = String::new();
    let full = cut(text, MAX_SERVER_TEXT)
        .split_whitespace()
        .try_for_each(|word| {
            let gap = (!line.is_empty()).then_some(' ');
            gap.into_iter()
                .chain(word.chars())
                .try_for_each(|c| push_shown(&mut line, c))
        });
    if full.is_break() {
        line.truncate(line.trim_end().len());
        line.push_str("...");
    }
    line
}

/// Appends `c` to `line`, escaped (`\u{1b}`) if it steers a terminal; breaks, leaving `line` as
/// it was, when that would make it longer than [`MAX_MESSAGE`], so no escape is cut in two.
fn push_shown(line: &mut String, c: char) -> ControlFlow<()> {
    let before = line.len();
    if steers_terminal(c) {
        line.extend(c.escape_unicode());
    } else {
        line.push(c);
    }
    if line.len() > MAX_MESSAGE {
        line.truncate(before);
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

/// A character a terminal acts on instead of showing: a control character (C0 such as ESC, BEL
/// and backspace, DEL, C1 such as the CSI 0x9B), or a bidirectional mark, embedding, override
/// or isolate, which reorders the text after it on screen.
fn steers_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::s3::{S3Credentials, S3Location, S3Timeouts};
    use std::time::Duration;

    fn answered(message: &str, head: &str) -> Answer {
        let error = opendal::Error::new(DalKind::Unexpected, message)
            .with_operation("stat")
            .with_context("response", head);
        Answer::of(&error, &error.to_string())
    }

    #[test]
    fn the_s3_code_status_and_region_are_read_from_opendal_errors() {
        let answer = answered(
            "S3Error { code: \"AuthorizationHeaderMalformed\", message: \"The authorization \
             header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'\", \
             resource: \"\", request_id: \"X\" }",
            "Parts { status: 400, version: HTTP/1.1, headers: {\"content-type\": \"application/xml\"} }",
        );
        assert_eq!(answer.status, Some(400));
        assert_eq!(answer.code.as_deref(), Some("AuthorizationHeaderMalformed"));
        assert_eq!(answer.region.as_deref(), Some("eu-west-1"));
        let head = answered(
            "",
            "Parts { status: 301, version: HTTP/1.1, headers: {\"x-amz-bucket-region\": \"ap-south-1\"} }",
        );
        assert_eq!((head.status, head.code), (Some(301), None));
        assert_eq!(head.region.as_deref(), Some("ap-south-1"));
        let page = answered(
            "<html>502 Bad Gateway</html>",
            "Parts { status: 502, version: HTTP/1.1, headers: {} }",
        );
        assert_eq!(
            (page.status, page.code, page.message),
            (Some(502), None, None)
        );
        let made = opendal::Error::new(DalKind::Unexpected, "no answer in time");
        assert_eq!(operation(&made.to_string()), "");
        assert_eq!(Answer::of(&made, &made.to_string()), Answer::default());
    }

    /// A backend at `location` whose credentials say `region`; it reaches nothing.
    fn backend(location: &str, region: &str) -> S3Backend {
        let credentials = S3Credentials {
            keys: None,
            region: region.into(),
        };
        let timeouts = S3Timeouts {
            call: Duration::from_secs(1),
        };
        S3Backend::new(S3Location::parse(location).unwrap(), credentials, timeouts).unwrap()
    }

    /// An error as opendal makes one from an answer with an S3 error document.
    fn refused(code: &str, status: u16, headers: &str) -> opendal::Error {
        answer_error(
            &format!(
                "S3Error {{ code: \"{code}\", message: \"m\", resource: \"\", request_id: \"\" }}"
            ),
            status,
            headers,
        )
    }

    /// An error as opendal makes one from an answer whose body is `body`.
    fn answer_error(body: &str, status: u16, headers: &str) -> opendal::Error {
        opendal::Error::new(DalKind::Unexpected, body)
            .with_operation("stat")
            .with_context(
                "response",
                format!("Parts {{ status: {status}, version: HTTP/1.1, headers: {{{headers}}} }}"),
            )
    }

    #[test]
    fn refusals_name_what_to_fix() {
        let store = backend("https://s3.us-east-1.amazonaws.com/bkt/p", "ap-south-1");
        // The host's region is the one signed for, whatever the credentials say.
        assert_eq!(
            store.render(&refused(
                "PermanentRedirect",
                301,
                "\"x-amz-bucket-region\": \"eu-west-1\""
            )),
            "bucket bkt is in region eu-west-1, not us-east-1: use the location \
             s3:https://s3.eu-west-1.amazonaws.com/bkt/p (HTTP 301 PermanentRedirect)"
        );
        assert!(
            store
                .render(&refused("NoSuchBucket", 404, ""))
                .starts_with("bucket bkt does not exist")
        );
        assert!(
            store
                .render(&refused("SignatureDoesNotMatch", 403, ""))
                .contains("AWS_SECRET_ACCESS_KEY")
        );
        assert!(
            store
                .render(&refused("InvalidAccessKeyId", 403, ""))
                .contains("AWS_ACCESS_KEY_ID")
        );
        assert_eq!(
            store.render(&refused("InternalError", 500, "")),
            "stat: HTTP 500 InternalError: m"
        );
    }

    #[test]
    fn a_wrong_region_in_the_host_is_fixed_in_the_location_not_with_s3_region() {
        let store = backend("https://s3.us-east-1.amazonaws.com/bkt/p", "ap-south-1");
        let said = store.render(&answer_error("", 301, ""));
        assert!(
            said.starts_with("bucket bkt is not in region us-east-1"),
            "{said}"
        );
        assert!(
            said.contains("correct the region in the location"),
            "{said}"
        );
        assert!(!said.contains("set "), "{said}");
        // A host naming no region: --s3-region is what sets it.
        let elsewhere = backend("http://127.0.0.1:9/bkt/p", "us-east-1");
        let said = elsewhere.render(&answer_error("", 301, ""));
        assert!(said.contains("set its region with --s3-region"), "{said}");
    }

    #[test]
    fn a_region_the_server_names_is_used_only_when_spelled_like_one() {
        for bad in [
            "eu-west-1.attacker.example",
            "EU-WEST-1",
            "x\u{1b}[2J",
            "",
            "a-region-name-far-longer-than-32-chars",
        ] {
            let head = format!(
                "Parts {{ status: 301, version: HTTP/1.1, headers: {{\"x-amz-bucket-region\": \
                 \"{bad}\"}} }}"
            );
            assert_eq!(answered("", &head).region, None, "{bad:?}");
            let body = format!(
                "S3Error {{ code: \"AuthorizationHeaderMalformed\", message: \"the region \
                 'us-east-1' is wrong; expecting '{bad}'\", resource: \"\", request_id: \"\" }}"
            );
            let status = "Parts { status: 400, version: HTTP/1.1, headers: {} }";
            assert_eq!(answered(&body, status).region, None, "{bad:?}");
        }
        let store = backend("https://s3.us-east-1.amazonaws.com/bkt/p", "us-east-1");
        let said = store.render(&refused(
            "PermanentRedirect",
            301,
            "\"x-amz-bucket-region\": \"evil.example/bkt\"",
        ));
        assert!(!said.contains("evil"), "{said}");
        assert!(!said.contains("use the location"), "{said}");
        assert!(
            said.starts_with("bucket bkt is not in region us-east-1"),
            "{said}"
        );
    }

    #[test]
    fn server_text_that_would_steer_a_terminal_is_shown_escaped() {
        let body = "<html>\u{1b}[2J\u{1b}]0;owned\u{7} back\u{8}\u{8}space \u{9b}31m red \
                    \u{202e}exe.txt\u{2066}x\u{2069} del\u{7f}</html>";
        let store = backend("http://127.0.0.1:9/bkt", "us-east-1");
        let said = store.render(&answer_error(body, 502, ""));
        assert!(!said.chars().any(steers_terminal), "{said:?}");
        assert_eq!(
            said,
            "stat: HTTP 502: <html>\\u{1b}[2J\\u{1b}]0;owned\\u{7} back\\u{8}\\u{8}space \
             \\u{9b}31m red \\u{202e}exe.txt\\u{2066}x\\u{2069} del\\u{7f}</html>"
        );
        assert_eq!(clip("a\u{200f}b\u{61c}"), "a\\u{200f}b\\u{61c}");
        assert_eq!(clip("plain  text\n\tand é"), "plain text and é");
    }

    #[test]
    fn escapes_count_toward_the_line_limit_and_are_never_cut() {
        let bells = "\u{7}".repeat(MAX_MESSAGE);
        let said = clip(&bells);
        assert!(said.len() <= MAX_MESSAGE + "...".len(), "{}", said.len());
        let kept = said.strip_suffix("...").unwrap();
        assert!(!kept.is_empty());
        assert_eq!(kept.replace("\\u{7}", ""), "", "{said}");
    }

    #[test]
    fn a_huge_body_is_cut_to_a_few_kib_before_anything_reads_it() {
        let body = format!("{} {}", "word ".repeat(2 << 20), "é".repeat(1 << 20));
        let error = answer_error(&body, 502, "\"x-amz-bucket-region\": \"eu-west-1\"");
        let display = displayed(&error);
        assert!(display.len() <= MAX_SERVER_TEXT, "{}", display.len());
        assert!(display.contains("status: 502"));
        assert_eq!(message(&error).len(), MAX_SERVER_TEXT);
        assert_eq!(
            Answer::of(&error, &display).region.as_deref(),
            Some("eu-west-1")
        );
        let store = backend("http://127.0.0.1:9/bkt", "us-east-1");
        let said = store.render(&error);
        assert!(said.starts_with("stat: HTTP 502: word word"), "{said}");
        assert!(said.len() <= MAX_MESSAGE + "...".len() && said.ends_with("..."));
        // A multi-byte character straddling the cut is left out whole.
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        assert_eq!(cut("aé", 99), "aé");
    }
}
