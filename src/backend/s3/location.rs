//! Where an S3 repository is: the location's URL parsed once, at the edge, into endpoint,
//! bucket, prefix and the region an AWS host names.
//!
//! A location is echoed by every message that names the repository (password prompts, errors),
//! so what is refused here is never echoed: credentials typed into it (`KEY:SECRET@`, where a
//! secret may itself hold a `/`) must not reach a terminal or a log. What would be sent
//! unencoded and address another object (`?`, `#`) is refused too, as is a bucket S3 would
//! refuse, with a line saying why rather than a request the store rejects.

/// Where an S3 repository is: `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`, or on AWS
/// `s3:https://BUCKET.s3.REGION.amazonaws.com[/PREFIX]` (virtual-host style).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http(s)://HOST[:PORT]`, without the bucket.
    pub endpoint: String,
    /// The bucket, which must exist.
    pub bucket: String,
    /// Objects are stored under this prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// The region an AWS host name names (`s3.REGION.amazonaws.com`, with or without the
    /// bucket in front): the only one requests there can be signed for.
    pub region: Option<String>,
    /// The URL names the bucket in the host (`BUCKET.s3.REGION.amazonaws.com`).
    pub bucket_in_host: bool,
    /// Requests address the bucket as a host name (virtual-host style), not as the first
    /// component of the path.
    pub virtual_host: bool,
}

/// Why a location is not an S3 location cairn accepts. No variant carries the location itself,
/// which may hold a secret; only [`LocationError::Bucket`] names what was typed, the bucket.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// Not `http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
    #[error(
        "an S3 location is s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX] or \
         s3:https://BUCKET.s3.REGION.amazonaws.com[/PREFIX]"
    )]
    Shape,
    /// An `@` anywhere: `KEY:SECRET@HOST`, whose secret would be shown wherever the location is.
    #[error(
        "credentials do not belong in the location: set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    )]
    Credentials,
    /// A `?` or `#`, which would be sent unencoded in request paths and address other objects.
    #[error("an S3 location has no query or fragment: '?' and '#' are not allowed in it")]
    QueryOrFragment,
    /// A port that is not a number from 0 to 65535.
    #[error("the port of an S3 location is a number (HOST:PORT)")]
    Port,
    /// A bucket name S3 refuses.
    #[error("bucket {0:?} is not a bucket name: at most 255 letters, digits, '.', '-' and '_'")]
    Bucket(String),
}

impl S3Location {
    /// Parses the part after `s3:`. Host names are case-insensitive and may end in a `.`, so
    /// the host is lowercased and its trailing dot dropped before an AWS name is recognised.
    pub fn parse(url: &str) -> Result<S3Location, LocationError> {
        // Anywhere, not only in the host: a secret with a `/` in it moves the `@` into the path.
        if url.contains('@') {
            return Err(LocationError::Credentials);
        }
        if url.contains(['?', '#']) {
            return Err(LocationError::QueryOrFragment);
        }
        let (scheme, rest) = url.split_once("://").ok_or(LocationError::Shape)?;
        if scheme != "http" && scheme != "https" {
            return Err(LocationError::Shape);
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = split_port(authority)?;
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.is_empty() {
            return Err(LocationError::Shape);
        }
        let location = located(scheme, &host, port, path.trim_matches('/'))?;
        check_bucket(&location.bucket)?;
        Ok(location)
    }
}

/// The location at `scheme://host{port}/path`, `host` lowercased and `port` empty or `:N`:
/// the bucket from an AWS virtual-host name, else from the path's first component.
fn located(scheme: &str, host: &str, port: &str, path: &str) -> Result<S3Location, LocationError> {
    let aws = aws_host(host);
    if let Some((bucket, region, bare)) = aws
        && !bucket.is_empty()
    {
        return Ok(S3Location {
            endpoint: format!("{scheme}://{bare}{port}"),
            bucket: bucket.to_string(),
            prefix: path.to_string(),
            region: region.map(str::to_string),
            bucket_in_host: true,
            // A bucket with dots matches no certificate of `*.s3.REGION.amazonaws.com`, and
            // opendal refuses it virtual-host style: it is addressed path-style.
            virtual_host: !bucket.contains('.'),
        });
    }
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(LocationError::Shape);
    }
    Ok(S3Location {
        endpoint: format!("{scheme}://{host}{port}"),
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        region: aws.and_then(|(_, region, _)| region).map(str::to_string),
        bucket_in_host: false,
        virtual_host: false,
    })
}

/// `HOST[:PORT]` as the host and `:PORT` (empty without one); an IPv6 host keeps its brackets
/// (`[::1]:9000`). A port must be a number that fits 16 bits.
fn split_port(authority: &str) -> Result<(&str, &str), LocationError> {
    let colon = match authority.strip_prefix('[') {
        Some(inner) => {
            let close = inner.find(']').ok_or(LocationError::Shape)? + 2;
            match &authority[close..] {
                "" => return Ok((authority, "")),
                rest if rest.starts_with(':') => close,
                _ => return Err(LocationError::Shape),
            }
        }
        None => match authority.find(':') {
            Some(colon) => colon,
            None => return Ok((authority, "")),
        },
    };
    let digits = &authority[colon + 1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LocationError::Port);
    }
    digits.parse::<u16>().map_err(|_| LocationError::Port)?;
    Ok((&authority[..colon], &authority[colon..]))
}

/// Refuses a bucket name no store takes: anything but 1 to 255 of ASCII letters, digits, `.`,
/// `-` and `_` (AWS's legacy rules; Ceph and MinIO deployments still hold such buckets). It
/// goes into every request's path unencoded, so anything else would address something else.
fn check_bucket(bucket: &str) -> Result<(), LocationError> {
    let bytes = bucket.as_bytes();
    let valid = (1..=255).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(LocationError::Bucket(bucket.to_string()))
    }
}

/// An AWS S3 host name as `(bucket, region, host without the bucket)`: `s3.amazonaws.com`,
/// `s3.REGION.amazonaws.com` or `s3.dualstack.REGION.amazonaws.com` (`.amazonaws.com.cn`
/// too), each with `BUCKET.` in front for a virtual-host name (the bucket is empty for a
/// path-style one). `None` for any other host. `host` is lowercase, without port or trailing
/// dot.
fn aws_host(host: &str) -> Option<(&str, Option<&str>, &str)> {
    let stem = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = stem.split('.').collect();
    let s3 = labels.iter().rposition(|label| *label == "s3")?;
    let region = match &labels[s3 + 1..] {
        [] => None,
        [region] | ["dualstack", region] if *region != "dualstack" => Some(*region),
        _ => return None,
    };
    // The bucket's labels and the dot after them.
    let bucket_len: usize = labels[..s3].iter().map(|label| label.len() + 1).sum();
    Some((
        &host[..bucket_len.saturating_sub(1)],
        region,
        &host[bucket_len..],
    ))
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.endpoint.split_once("://") {
            Some((scheme, host)) if self.bucket_in_host => {
                write!(f, "s3:{scheme}://{}.{host}", self.bucket)?
            }
            _ => write!(f, "s3:{}/{}", self.endpoint, self.bucket)?,
        }
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_with_and_without_prefix() {
        let at = S3Location::parse("http://127.0.0.1:9000/bucket/some/prefix/").unwrap();
        assert_eq!(at.endpoint, "http://127.0.0.1:9000");
        assert_eq!(at.bucket, "bucket");
        assert_eq!(at.prefix, "some/prefix");
        assert_eq!(
            at.to_string(),
            "s3:http://127.0.0.1:9000/bucket/some/prefix"
        );
        let bare = S3Location::parse("https://s3.amazonaws.com/bkt").unwrap();
        assert_eq!((bare.bucket.as_str(), bare.prefix.as_str()), ("bkt", ""));
        let v6 = S3Location::parse("http://[::1]:9000/bkt").unwrap();
        assert_eq!(v6.endpoint, "http://[::1]:9000");
        for shape in [
            "ftp://host/bkt",
            "http://host",
            "http://host/",
            "http:///bkt",
        ] {
            assert_eq!(
                S3Location::parse(shape),
                Err(LocationError::Shape),
                "{shape}"
            );
        }
        assert_eq!((at.region, at.virtual_host), (None, false));
    }

    #[test]
    fn credentials_anywhere_in_a_location_are_refused_without_echoing_them() {
        for typed in [
            "http://AKIAKEY:hunter2@host/bkt",
            // A secret with a `/`: the host ends inside the secret, the `@` is in the path.
            "https://AKIA:wJal/rXU@s3.example/bucket",
            "https://host/bucket/prefix@x",
        ] {
            let refused = S3Location::parse(typed).unwrap_err();
            assert_eq!(refused, LocationError::Credentials, "{typed}");
            let said = refused.to_string();
            for secret in ["AKIA", "hunter2", "wJal", "rXU"] {
                assert!(!said.contains(secret), "{said}");
            }
            assert!(said.contains("AWS_SECRET_ACCESS_KEY"), "{said}");
        }
    }

    #[test]
    fn queries_fragments_and_bad_ports_are_refused() {
        for typed in [
            "http://host/bkt?x=1",
            "http://host/bkt/p#frag",
            "http://host?/bkt",
        ] {
            assert_eq!(
                S3Location::parse(typed),
                Err(LocationError::QueryOrFragment),
                "{typed}"
            );
        }
        for typed in [
            "http://host:/bkt",
            "http://host:90a/bkt",
            "http://host:99999/bkt",
            "http://host:1:2/bkt",
            "http://[::1]:x/bkt",
        ] {
            assert_eq!(
                S3Location::parse(typed),
                Err(LocationError::Port),
                "{typed}"
            );
        }
        assert_eq!(
            S3Location::parse("http://[::1]x/bkt"),
            Err(LocationError::Shape)
        );
    }

    #[test]
    fn buckets_are_names_a_store_takes_and_a_refusal_names_the_bucket() {
        let (longest, too_long) = ("a".repeat(255), "a".repeat(256));
        for good in ["b", "my-bucket.2", "My_Bucket", longest.as_str()] {
            let at = S3Location::parse(&format!("http://host/{good}")).unwrap();
            assert_eq!(at.bucket, good);
        }
        for bad in ["a b", "a%2fb", "a!b", "bü", too_long.as_str()] {
            let refused = S3Location::parse(&format!("http://host/{bad}/p")).unwrap_err();
            assert_eq!(refused, LocationError::Bucket(bad.to_string()));
            assert!(
                refused.to_string().contains(&format!("{bad:?}")),
                "{refused}"
            );
        }
    }

    #[test]
    fn aws_host_names_give_the_region_and_virtual_host_ones_the_bucket() {
        let at = S3Location::parse("https://my-bucket.s3.eu-west-1.amazonaws.com/cairn/x").unwrap();
        assert_eq!(at.endpoint, "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(at.bucket, "my-bucket");
        assert_eq!(at.prefix, "cairn/x");
        assert_eq!(at.region.as_deref(), Some("eu-west-1"));
        assert!(at.virtual_host);
        assert_eq!(
            at.to_string(),
            "s3:https://my-bucket.s3.eu-west-1.amazonaws.com/cairn/x"
        );
        let root = S3Location::parse("https://bkt.s3.us-east-2.amazonaws.com").unwrap();
        assert_eq!((root.bucket.as_str(), root.prefix.as_str()), ("bkt", ""));
        // Path-style on a regional endpoint: the region, and the bucket from the path.
        let path = S3Location::parse("https://s3.eu-central-1.amazonaws.com/bkt/p").unwrap();
        assert_eq!(path.region.as_deref(), Some("eu-central-1"));
        assert_eq!((path.bucket.as_str(), path.virtual_host), ("bkt", false));
        // Dots in the bucket: named in the host, addressed path-style.
        let dotted = S3Location::parse("https://a.b.s3.eu-west-1.amazonaws.com/p").unwrap();
        assert_eq!(
            (dotted.bucket.as_str(), dotted.virtual_host),
            ("a.b", false)
        );
        assert_eq!(
            dotted.to_string(),
            "s3:https://a.b.s3.eu-west-1.amazonaws.com/p"
        );
        let dual = S3Location::parse("https://bkt.s3.dualstack.ap-south-1.amazonaws.com/").unwrap();
        assert_eq!(
            dual.endpoint,
            "https://s3.dualstack.ap-south-1.amazonaws.com"
        );
        assert_eq!(dual.region.as_deref(), Some("ap-south-1"));
        // Other hosts are path-style, with no region.
        let minio = S3Location::parse("https://minio.example.com/bkt").unwrap();
        assert_eq!((minio.region, minio.virtual_host), (None, false));
        assert_eq!(
            S3Location::parse("https://s3.eu-west-1.amazonaws.com/"),
            Err(LocationError::Shape)
        );
    }

    #[test]
    fn aws_host_names_are_recognised_in_any_case_with_a_port_or_a_trailing_dot() {
        for typed in [
            "https://My-Bucket.S3.EU-West-1.AmazonAWS.com/p",
            "https://my-bucket.s3.eu-west-1.amazonaws.com./p",
            "https://my-bucket.s3.eu-west-1.amazonaws.com:443/p",
            "https://MY-BUCKET.s3.eu-west-1.amazonaws.com.:443/p",
        ] {
            let at = S3Location::parse(typed).unwrap();
            assert_eq!(at.bucket, "my-bucket", "{typed}");
            assert_eq!(at.region.as_deref(), Some("eu-west-1"), "{typed}");
            assert!(at.bucket_in_host && at.virtual_host, "{typed}");
            assert!(
                at.endpoint
                    .starts_with("https://s3.eu-west-1.amazonaws.com"),
                "{typed}"
            );
        }
        let port = S3Location::parse("https://bkt.s3.eu-west-1.amazonaws.com:443/p").unwrap();
        assert_eq!(port.endpoint, "https://s3.eu-west-1.amazonaws.com:443");
        assert_eq!(
            port.to_string(),
            "s3:https://bkt.s3.eu-west-1.amazonaws.com:443/p"
        );
    }
}
