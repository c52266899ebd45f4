//! The backup store on S3 or an S3-compatible service (Cloudflare R2,
//! SeaweedFS, MinIO), through aws-sdk-s3.
//!
//! R2 with recent AWS SDKs needs request checksums calculated and response
//! checksums validated only "when required"; path-style addressing is on by
//! itself for IP-address and localhost endpoints. Credentials come from the
//! standard AWS chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` first).
//! Listing pages 1,000 keys a call. A crawl (the catalog read) runs every
//! request whose prefix or key is known at once, a bounded number at a
//! time (`[backup] parallel_requests`). The SDK retries 5xx,
//! throttling and timeouts with backoff. No error message carries a secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use jiff::Timestamp;

use super::{Answer, Ask, BackupStore, ObjectMeta, Request, StoreError, Then};

pub struct S3Store {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    /// How many requests a crawl may have in flight at once.
    parallel: usize,
}

/// What one request needs, owned, so that many can run at once.
#[derive(Clone)]
struct Conn {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Key prefix inside the bucket, ending in `/` (or empty).
    root: String,
    endpoint: String,
    list_calls: Arc<AtomicU64>,
}

/// Settings for an S3 store.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    /// Empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    /// None: on for IP-address and localhost endpoints only.
    pub path_style: Option<bool>,
    /// Static credentials (access key id, secret); None: the AWS chain.
    pub credentials: Option<(String, String)>,
    /// How many requests a crawl may have in flight at once.
    pub parallel: usize,
}

fn is_local_or_ip(endpoint: &str) -> bool {
    let host = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok() || endpoint.contains("://[")
}

fn to_timestamp(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Timestamp {
    t.and_then(|d| Timestamp::new(d.secs(), d.subsec_nanos() as i32).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Drop for S3Store {
    fn drop(&mut self) {
        tracing::info!(list_calls = self.list_calls(), store = %self.describe(), "S3 LIST requests made");
    }
}

impl S3Store {
    pub fn new(s: &S3Settings) -> Result<S3Store, StoreError> {
        crate::init_tls();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io {
                location: "the S3 client".into(),
                source: e,
            })?;
        let sdk = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(Region::new(s.region.clone()))
                .load(),
        );
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(4))
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if !s.endpoint.is_empty() {
            conf = conf.endpoint_url(&s.endpoint);
        }
        if let Some((id, secret)) = &s.credentials {
            conf = conf.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "drgit-cluster-secret",
            ));
        }
        let path_style = s.path_style.unwrap_or_else(|| is_local_or_ip(&s.endpoint));
        conf = conf.force_path_style(path_style);
        Ok(S3Store {
            rt,
            conn: Conn {
                client: aws_sdk_s3::Client::from_conf(conf.build()),
                bucket: s.bucket.clone(),
                root: s.prefix.clone(),
                endpoint: if s.endpoint.is_empty() {
                    "AWS S3".into()
                } else {
                    s.endpoint.clone()
                },
                list_calls: Arc::new(AtomicU64::new(0)),
            },
            parallel: s.parallel.max(1),
        })
    }

    /// LIST requests made so far (for benchmarks and `-v`).
    pub fn list_calls(&self) -> u64 {
        self.conn.list_calls.load(Ordering::Relaxed)
    }

    /// One request, answered.
    fn ask(&self, ask: Ask) -> Result<Answer, StoreError> {
        self.rt.block_on(self.conn.clone().ask(ask))
    }
}

/// Why a read failed before its bytes were checked.
enum GetFail {
    Sdk(
        Box<
            SdkError<
                aws_sdk_s3::operation::get_object::GetObjectError,
                aws_sdk_s3::config::http::HttpResponse,
            >,
        >,
    ),
    Body(String),
}

/// (Content-Length, bytes) of one GET.
type Got = Result<(Option<i64>, Vec<u8>), GetFail>;

/// One GET of a whole object (or a range), owning what it needs so that
/// many can run at once.
async fn get_object(
    client: aws_sdk_s3::Client,
    bucket: String,
    full: String,
    range: Option<String>,
) -> Got {
    let resp = client
        .get_object()
        .bucket(&bucket)
        .key(&full)
        .set_range(range)
        .send()
        .await
        .map_err(|e| GetFail::Sdk(Box::new(e)))?;
    let expected = resp.content_length();
    let bytes = resp
        .body
        .collect()
        .await
        .map_err(|e| GetFail::Body(e.to_string()))?;
    Ok((expected, bytes.into_bytes().to_vec()))
}

/// Maps an SDK error to a message that says what to do.
fn map_err<E: ProvideErrorMetadata + std::fmt::Debug>(
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    bucket: &str,
    location: String,
    endpoint: &str,
) -> StoreError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    match (&e, code.as_deref(), status) {
        (SdkError::DispatchFailure(d), _, _) => StoreError::Unreachable {
            endpoint: endpoint.into(),
            detail: if d.is_timeout() {
                "timed out".into()
            } else {
                format!("{:?}", d.as_connector_error().map(|c| c.to_string()))
            },
        },
        (SdkError::TimeoutError(_), _, _) => StoreError::Unreachable {
            endpoint: endpoint.into(),
            detail: "timed out".into(),
        },
        (_, Some("NoSuchBucket"), _) => StoreError::NoSuchBucket {
            bucket: bucket.into(),
            endpoint: endpoint.into(),
        },
        (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied"), _)
        | (_, _, Some(401 | 403)) => StoreError::AccessDenied {
            location,
            code: code.unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(403))),
        },
        (_, Some("NoSuchKey"), _) | (_, _, Some(404)) => StoreError::Missing { location },
        _ => StoreError::S3 {
            location,
            detail: format!(
                "{}{}",
                code.map(|c| format!("{c}: ")).unwrap_or_default(),
                e.message().map(str::to_string).unwrap_or_else(|| status
                    .map(|s| format!("HTTP {s}"))
                    .unwrap_or_else(|| "request failed".into()))
            ),
        },
    }
}

/// One object of a listing page, its key still under the root.
struct Listed {
    key: String,
    size: u64,
    last_modified: Timestamp,
    etag: Option<String>,
}

async fn list_pages(
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    delimiter: bool,
    calls: Arc<AtomicU64>,
) -> Result<
    (Vec<String>, Vec<Listed>),
    SdkError<
        aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
        aws_sdk_s3::config::http::HttpResponse,
    >,
> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut token: Option<String> = None;
    loop {
        calls.fetch_add(1, Ordering::Relaxed);
        let mut req = client.list_objects_v2().bucket(&bucket).prefix(&prefix);
        if delimiter {
            req = req.delimiter("/");
        }
        if let Some(t) = &token {
            req = req.continuation_token(t);
        }
        let page = req.send().await?;
        for p in page.common_prefixes() {
            if let Some(p) = p.prefix() {
                dirs.push(p.to_string());
            }
        }
        for o in page.contents() {
            if let Some(k) = o.key() {
                files.push(Listed {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: to_timestamp(o.last_modified()),
                    etag: o.e_tag().map(|e| e.trim_matches('"').to_string()),
                });
            }
        }
        match (page.is_truncated(), page.next_continuation_token()) {
            (Some(true), Some(t)) => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok((dirs, files))
}

enum RangeError {
    Sdk(
        Box<
            SdkError<
                aws_sdk_s3::operation::get_object::GetObjectError,
                aws_sdk_s3::config::http::HttpResponse,
            >,
        >,
    ),
    Short(u64),
    Io(std::io::Error),
}

/// One ranged GET streamed into its place in `file`.
async fn fetch_range(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    r: &std::ops::Range<u64>,
    file: &std::fs::File,
) -> Result<(), RangeError> {
    use std::os::unix::fs::FileExt;
    let resp = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={}-{}", r.start, r.end.saturating_sub(1)))
        .send()
        .await
        .map_err(|e| RangeError::Sdk(Box::new(e)))?;
    let mut body = resp.body;
    let mut at = r.start;
    loop {
        match body.try_next().await {
            Ok(Some(chunk)) => {
                let take = ((r.end - at) as usize).min(chunk.len());
                file.write_all_at(&chunk[..take], at)
                    .map_err(RangeError::Io)?;
                at += take as u64;
            }
            Ok(None) => break,
            Err(_) => return Err(RangeError::Short(at - r.start)),
        }
    }
    if at < r.end {
        return Err(RangeError::Short(at - r.start));
    }
    Ok(())
}

impl Conn {
    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.root)
    }

    fn strip(&self, key: String) -> String {
        key.strip_prefix(&self.root)
            .map(str::to_string)
            .unwrap_or(key)
    }

    fn meta(&self, l: Listed) -> ObjectMeta {
        ObjectMeta {
            key: self.strip(l.key),
            size: l.size,
            last_modified: l.last_modified,
            etag: l.etag,
        }
    }

    /// Answers one request.
    async fn ask(self, ask: Ask) -> Result<Answer, StoreError> {
        Ok(match ask {
            Ask::List(prefix) => {
                let (_, mut objects) = self.pages(&prefix, false).await?;
                objects.sort_by(|a, b| a.key.cmp(&b.key));
                Answer::Objects(objects)
            }
            Ask::Level(prefix) => {
                let (dirs, objects) = self.pages(&prefix, true).await?;
                Answer::Level(dirs, objects)
            }
            Ask::Get(key) => Answer::Bytes(self.fetch(&key, None).await?),
            Ask::Head(key, len) => Answer::Bytes(
                self.fetch(&key, Some(format!("bytes=0-{}", len.saturating_sub(1))))
                    .await?,
            ),
        })
    }

    /// One GET (of a byte range, when given) read whole; a body shorter
    /// than its Content-Length is an error.
    async fn fetch(&self, key: &str, range: Option<String>) -> Result<Vec<u8>, StoreError> {
        let got = get_object(
            self.client.clone(),
            self.bucket.clone(),
            format!("{}{key}", self.root),
            range,
        )
        .await;
        let (expected, bytes) = match got {
            Ok(v) => v,
            Err(GetFail::Sdk(e)) => {
                return Err(map_err(
                    *e,
                    &self.bucket,
                    self.location(key),
                    &self.endpoint,
                ));
            }
            Err(GetFail::Body(e)) => {
                return Err(StoreError::S3 {
                    location: self.location(key),
                    detail: format!("the download broke off: {e}"),
                });
            }
        };
        if let Some(n) = expected
            && n >= 0
            && bytes.len() as i64 != n
        {
            return Err(StoreError::Truncated {
                location: self.location(key),
                expected: n as u64,
                got: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Every page under `prefix` (one level with `delimiter`), keys relative to the root.
    async fn pages(
        &self,
        prefix: &str,
        delimiter: bool,
    ) -> Result<(Vec<String>, Vec<ObjectMeta>), StoreError> {
        let (dirs, files) = list_pages(
            self.client.clone(),
            self.bucket.clone(),
            format!("{}{prefix}", self.root),
            delimiter,
            self.list_calls.clone(),
        )
        .await
        .map_err(|e| map_err(e, &self.bucket, self.location(prefix), &self.endpoint))?;
        Ok((
            dirs.into_iter().map(|d| self.strip(d)).collect(),
            files.into_iter().map(|f| self.meta(f)).collect(),
        ))
    }
}

impl BackupStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.conn.bucket, self.conn.root)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        match self.ask(Ask::List(prefix.to_string()))? {
            Answer::Objects(objects) => Ok(objects),
            _ => unreachable!("a listing answers a list"),
        }
    }

    fn list_level(&self, prefix: &str) -> Result<(Vec<String>, Vec<ObjectMeta>), StoreError> {
        match self.ask(Ask::Level(prefix.to_string()))? {
            Answer::Level(dirs, objects) => Ok((dirs, objects)),
            _ => unreachable!("a level listing answers a level"),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.rt.block_on(self.conn.fetch(key, None))
    }

    fn get_head(&self, key: &str, len: u64) -> Result<Vec<u8>, StoreError> {
        self.rt.block_on(
            self.conn
                .fetch(key, Some(format!("bytes=0-{}", len.saturating_sub(1)))),
        )
    }

    fn crawl(&self, start: Vec<Request>, then: &mut Then<'_>) -> Result<(), StoreError> {
        self.rt.block_on(async {
            let sem = Arc::new(tokio::sync::Semaphore::new(self.parallel));
            let mut set = tokio::task::JoinSet::new();
            let spawn = |set: &mut tokio::task::JoinSet<_>, r: Request| {
                let (conn, sem) = (self.conn.clone(), sem.clone());
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let answer = conn.ask(r.ask.clone()).await;
                    (r, answer)
                });
            };
            for r in start {
                spawn(&mut set, r);
            }
            while let Some(joined) = set.join_next().await {
                let (r, answer) = joined.map_err(|e| StoreError::S3 {
                    location: self.conn.location(""),
                    detail: format!("a concurrent request stopped without an answer: {e}"),
                })?;
                match answer {
                    Ok(answer) => {
                        for next in then(r, answer) {
                            spawn(&mut set, next);
                        }
                    }
                    Err(e) => {
                        set.abort_all();
                        return Err(e);
                    }
                }
            }
            Ok(())
        })
    }
    fn stat(&self, key: &str) -> Result<(u64, Option<String>), StoreError> {
        let full = format!("{}{key}", self.conn.root);
        let head = self
            .rt
            .block_on(
                self.conn
                    .client
                    .head_object()
                    .bucket(&self.conn.bucket)
                    .key(&full)
                    .send(),
            )
            .map_err(|e| {
                map_err(
                    e,
                    &self.conn.bucket,
                    self.conn.location(key),
                    &self.conn.endpoint,
                )
            })?;
        Ok((
            head.content_length().unwrap_or(0).max(0) as u64,
            head.e_tag().map(|e| e.trim_matches('"').to_string()),
        ))
    }

    fn fetch_parts(
        &self,
        key: &str,
        file: &std::fs::File,
        ranges: &[std::ops::Range<u64>],
        parallel: usize,
        done: &(dyn Fn(usize, u64) + Sync),
    ) -> Result<(), StoreError> {
        let file = Arc::new(file.try_clone().map_err(|e| StoreError::Io {
            location: "the download file".into(),
            source: e,
        })?);
        let full = format!("{}{key}", self.conn.root);
        let location = self.conn.location(key);
        self.rt.block_on(async {
            let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
            let mut set = tokio::task::JoinSet::new();
            for (i, r) in ranges.iter().cloned().enumerate() {
                let (client, bucket, key, file, sem) = (
                    self.conn.client.clone(),
                    self.conn.bucket.clone(),
                    full.clone(),
                    file.clone(),
                    sem.clone(),
                );
                let (endpoint, location) = (self.conn.endpoint.clone(), location.clone());
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let mut last = None;
                    // A connection cut mid-body is retried; the part is rewritten whole.
                    for attempt in 0..3u32 {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt)))
                                .await;
                        }
                        match fetch_range(&client, &bucket, &key, &r, &file).await {
                            Ok(()) => return Ok((i, r.end - r.start)),
                            Err(RangeError::Sdk(e)) => {
                                last = Some(map_err(*e, &bucket, location.clone(), &endpoint))
                            }
                            Err(RangeError::Short(got)) => {
                                last = Some(StoreError::Truncated {
                                    location: location.clone(),
                                    expected: r.end - r.start,
                                    got,
                                })
                            }
                            Err(RangeError::Io(e)) => {
                                return Err(StoreError::Io {
                                    location: "the download file".into(),
                                    source: e,
                                });
                            }
                        }
                    }
                    Err(last.unwrap_or(StoreError::S3 {
                        location,
                        detail: "download failed".into(),
                    }))
                });
            }
            let mut first_error = None;
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok(Ok((i, n))) => done(i, n),
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                        set.abort_all();
                    }
                    Err(_) => {}
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_for_local_endpoints() {
        assert!(is_local_or_ip("http://127.0.0.1:9000"));
        assert!(is_local_or_ip("http://localhost:8333"));
        assert!(!is_local_or_ip(
            "https://b0832b1c20a7cada26af0ac45862ce80.r2.cloudflarestorage.com"
        ));
    }
}
