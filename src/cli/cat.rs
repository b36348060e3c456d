//! `cairn cat`: print one repository object as JSON, for debugging and scripts.

use crate::cli::Globals;
use anyhow::{Result, anyhow};
use cairn::repo::ids::{BlobId, IndexId};
use cairn::repo::index::Segment;
use cairn::repo::tree::Tree;
use std::io::Write;

/// Options of `cat`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn cat config\n  cairn cat snapshot latest\n  cairn cat tree 4f1c..."
)]
pub struct Args {
    /// What to print.
    #[arg(value_parser = ["config", "snapshot", "tree", "blob", "index"])]
    kind: String,
    /// Its id (snapshots: a prefix, `latest` or `latest~N`).
    id: Option<String>,
}

fn node_json(node: &cairn::repo::tree::Node) -> serde_json::Value {
    serde_json::json!({
        "name": String::from_utf8_lossy(&node.name), "type": format!("{:?}", node.kind).to_lowercase(),
        "mode": node.mode, "uid": node.uid, "gid": node.gid, "user": node.user, "group": node.group,
        "mtime": node.mtime, "ctime": node.ctime, "atime": node.atime, "size": node.size,
        "inode": node.inode, "device": node.device, "links": node.links, "rdev": node.rdev,
        "xattrs": node.xattrs.iter().map(|x| String::from_utf8_lossy(&x.name).into_owned()).collect::<Vec<_>>(),
        "target": String::from_utf8_lossy(&node.target), "content": node.content, "subtree": node.subtree,
    })
}

/// Runs `cat`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let id = || {
        args.id
            .clone()
            .ok_or_else(|| anyhow!("cat {} needs an id", args.kind))
    };
    let value = match args.kind.as_str() {
        "config" => serde_json::from_slice(
            &repo
                .backend()
                .get_bounded("config", cairn::repo::config::MAX_CONFIG_LEN)?,
        )?,
        "snapshot" => serde_json::to_value(repo.find_snapshot(&id()?)?.1)?,
        "tree" => {
            let blob = BlobId::from_hex(&id()?)?;
            let index = repo.load_index()?;
            let at = index.get(&blob).ok_or(cairn::Error::MissingBlob(blob))?;
            match Tree::decode(&repo.read_blob(&at)?, &blob)? {
                Tree::Nodes(nodes) => {
                    serde_json::json!({ "nodes": nodes.iter().map(node_json).collect::<Vec<_>>() })
                }
                Tree::Pieces(pieces) => {
                    serde_json::json!({ "pieces": pieces.iter().map(|p| serde_json::json!({
                    "first_name": String::from_utf8_lossy(&p.first_name), "tree": p.tree })).collect::<Vec<_>>() })
                }
            }
        }
        "blob" => {
            let blob = BlobId::from_hex(&id()?)?;
            let index = repo.load_index()?;
            let at = index.get(&blob).ok_or(cairn::Error::MissingBlob(blob))?;
            std::io::stdout().write_all(&repo.read_blob(&at)?)?;
            return Ok(0);
        }
        "index" => {
            let index_id = IndexId::from_hex(&id()?)?;
            let name = format!("index/{index_id}");
            serde_json::to_value(Segment::open(
                repo.key(),
                &name,
                &repo
                    .backend()
                    .get_bounded(&name, cairn::repo::index::MAX_SEGMENT_LEN)?,
            )?)?
        }
        _ => unreachable!("clap restricts the kinds"),
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(0)
}
