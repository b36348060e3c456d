//! S3 errors as one line a person can act on: a refusal with one clear cause (a missing
//! bucket, an unknown key, a wrong secret, another region) says what to fix; any other answer
//! gives the operation, the HTTP status and the S3 code; a call that got no answer gives the
//! system's reason (`Connection refused`), never the HTTP layers wrapped around it.

use super::{MAX_MESSAGE, S3Backend};
use crate::error::Error;
use opendal::ErrorKind as DalKind;
use std::io::ErrorKind;
use std::sync::atomic::Ordering;

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
                source: std::io::Error::new(kind, other.to_string()),
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
            _ if error.message().contains("BadDigest") => ErrorKind::Other,
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
        let shown = error.to_string();
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
                (None, _) if !error.message().is_empty() => {
                    line.push_str(&format!(": {}", error.message()))
                }
                (None, _) => {}
            }
        } else if let Some(cause) = innermost(error) {
            let what = match error.message() {
                "send http request" => format!("cannot reach {}", self.location.endpoint),
                "read data from http response" => {
                    format!("the answer from {} broke off", self.location.endpoint)
                }
                other => other.to_string(),
            };
            line.push_str(&format!("{what}: {cause}"));
        } else {
            line.push_str(error.message());
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
            (None, _) => format!(
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
        let answer = Answer::of(&error, &error.to_string());
        let unexplained = answer.code.is_none()
            && (error.kind() == DalKind::NotFound
                || matches!(answer.status, Some(301 | 400 | 403)));
        if !unexplained || self.probed.swap(true, Ordering::Relaxed) {
            return error;
        }
        match self.run(0, self.operator.check()) {
            Err(probe) => {
                let code = Answer::of(&probe, &probe.to_string()).code;
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
#[derive(Debug, Default, PartialEq, Eq)]
struct Answer {
    status: Option<u16>,
    code: Option<String>,
    message: Option<String>,
    region: Option<String>,
}

impl Answer {
    /// Reads `error`, whose display is `shown`.
    fn of(error: &opendal::Error, shown: &str) -> Answer {
        let body = error.message();
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
                .map(str::to_string)
                .or_else(|| {
                    // AuthorizationHeaderMalformed: "… the region 'us-east-1' is wrong;
                    // expecting 'eu-west-1'".
                    between(message.as_deref()?, "expecting '", "'").map(str::to_string)
                }),
            message,
        }
    }
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
    Some(cause.to_string())
}

/// One line, and not a page long: a proxy's error page arrives as the message.
fn clip(line: &str) -> String {
    let mut line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > MAX_MESSAGE {
        let cut = (0..=MAX_MESSAGE)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push_str("...");
    }
    line
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

    #[test]
    fn refusals_name_what_to_fix() {
        let at = S3Location::parse("https://s3.us-east-1.amazonaws.com/b/p").unwrap();
        let credentials = S3Credentials {
            keys: None,
            region: "ap-south-1".into(),
        };
        let timeouts = S3Timeouts {
            call: Duration::from_secs(1),
        };
        let backend = S3Backend::new(at, credentials, timeouts).unwrap();
        let error = |code: &str, status: u16, headers: &str| {
            opendal::Error::new(
                DalKind::Unexpected,
                format!(
                    "S3Error {{ code: \"{code}\", message: \"m\", resource: \"\", request_id: \
                     \"\" }}"
                ),
            )
            .with_operation("stat")
            .with_context(
                "response",
                format!("Parts {{ status: {status}, version: HTTP/1.1, headers: {{{headers}}} }}"),
            )
        };
        // The host's region is the one signed for, whatever the credentials say.
        assert_eq!(
            backend.render(&error(
                "PermanentRedirect",
                301,
                "\"x-amz-bucket-region\": \"eu-west-1\""
            )),
            "bucket b is in region eu-west-1, not us-east-1: use the location \
             s3:https://s3.eu-west-1.amazonaws.com/b/p (HTTP 301 PermanentRedirect)"
        );
        assert!(
            backend
                .render(&error("NoSuchBucket", 404, ""))
                .starts_with("bucket b does not exist")
        );
        assert!(
            backend
                .render(&error("SignatureDoesNotMatch", 403, ""))
                .contains("AWS_SECRET_ACCESS_KEY")
        );
        assert!(
            backend
                .render(&error("InvalidAccessKeyId", 403, ""))
                .contains("AWS_ACCESS_KEY_ID")
        );
        assert_eq!(
            backend.render(&error("InternalError", 500, "")),
            "stat: HTTP 500 InternalError: m"
        );
    }
}
