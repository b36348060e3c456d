//! `cairn-s3-server --port PORT --access-key AK --secret-key SK DIR`: serves the directory
//! DIR as an S3 endpoint on 127.0.0.1 (each subdirectory a bucket) until killed. s3s-fs's
//! storage and protocol, with TCP_NODELAY set on every connection.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::PathBuf;
use tokio::net::TcpListener;

struct Options {
    port: u16,
    access_key: String,
    secret_key: String,
    root: PathBuf,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut access_key, mut secret_key, mut root) = (None, None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()),
            "--access-key" => access_key = args.next(),
            "--secret-key" => secret_key = args.next(),
            _ => root = Some(PathBuf::from(arg)),
        }
    }
    let usage = "usage: cairn-s3-server --port PORT --access-key AK --secret-key SK DIR";
    Ok(Options {
        port: port.ok_or(usage)?,
        access_key: access_key.ok_or(usage)?,
        secret_key: secret_key.ok_or(usage)?,
        root: root.ok_or(usage)?,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse()?;
    let mut builder = S3ServiceBuilder::new(s3s_fs::FileSystem::new(options.root).map_err(|e| format!("{e:?}"))?);
    builder.set_auth(SimpleAuth::from_single(options.access_key, options.secret_key));
    let service = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", options.port)).await?;
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
