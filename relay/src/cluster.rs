//! The cluster file: which nodes exist, their roles and addresses.
//!
//! A cluster is several processes started from one TOML file. Relative paths in the file
//! are resolved against the file's folder. Example:
//!
//! ```toml
//! [cluster]
//! token_key = "token.key"      # HS256 secret shared by every edge
//! mesh_ca = "mesh/ca.pem"      # CA of the mesh certificates; omit for a plain-TCP mesh
//!
//! [[node]]
//! id = "owner-1"
//! roles = ["owner"]
//! mesh = "127.0.0.1:7401"
//! data_dir = "owner-1"
//!
//! [[node]]
//! id = "edge-1"
//! roles = ["edge"]
//! quic = "127.0.0.1:4433"
//! http = "127.0.0.1:8080"     # optional: WebSocket fallback, health and /metrics
//! snowflake_node = 1
//! ```
//!
//! With `mesh_ca`, each node presents `mesh_cert` and `mesh_key`, which default to
//! `<id>.pem` and `<id>.key` in the CA's folder (the layout `tidings cluster up` writes).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mesh_tls::MeshTlsPaths;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("failed to read cluster file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cluster file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid cluster file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("node {id:?} is not in cluster file {path}")]
    UnknownNode { path: PathBuf, id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Edge,
    Owner,
}

/// Settings shared by every node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// HS256 secret file used to verify (and, for `tidings token`, sign) client tokens.
    pub token_key: Option<PathBuf>,
    /// Ed25519 public key (PEM) used to verify EdDSA client tokens instead of HS256.
    pub token_public_key: Option<PathBuf>,
    /// Folder for the edges' development TLS certificates.
    pub tls_dir: Option<PathBuf>,
    /// CA certificate (PEM) that every mesh certificate must chain to. Without it the
    /// mesh runs over plain TCP.
    pub mesh_ca: Option<PathBuf>,
}

/// One node of the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    pub roles: Vec<Role>,
    /// Mesh (Cap'n Proto RPC over TCP) address; required for owners.
    pub mesh: Option<SocketAddr>,
    /// Client QUIC address; required for edges.
    pub quic: Option<SocketAddr>,
    /// HTTP address of an edge (WebSocket fallback, health checks, `/metrics`).
    pub http: Option<SocketAddr>,
    /// Mesh certificate chain (PEM); defaults to `<id>.pem` next to the mesh CA.
    pub mesh_cert: Option<PathBuf>,
    /// Mesh private key (PEM); defaults to `<id>.key` next to the mesh CA.
    pub mesh_key: Option<PathBuf>,
    /// Storage folder of an owner.
    pub data_dir: Option<PathBuf>,
    /// Relative share of virtual shards an owner takes.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Node id stamped into Snowflake message ids (0 to 1023), unique per edge.
    #[serde(default)]
    pub snowflake_node: u16,
}

fn default_weight() -> u32 {
    1
}

impl NodeConfig {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterFile {
    #[serde(default)]
    cluster: ClusterSettings,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeConfig>,
}

/// A parsed and validated cluster file.
#[derive(Debug, Clone)]
pub struct ClusterFile {
    pub path: PathBuf,
    pub settings: ClusterSettings,
    pub nodes: Vec<NodeConfig>,
}

impl ClusterFile {
    /// Reads, parses and validates a cluster file.
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read {
            path: path.to_owned(),
            source,
        })?;
        ClusterFile::parse(path, &text)
    }

    /// Parses and validates cluster file text; `path` resolves relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<ClusterFile, ClusterError> {
        let raw: RawClusterFile = toml::from_str(text).map_err(|error| ClusterError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: Option<PathBuf>| p.map(|p| base.join(p));

        let settings = ClusterSettings {
            token_key: resolve(raw.cluster.token_key),
            token_public_key: resolve(raw.cluster.token_public_key),
            tls_dir: resolve(raw.cluster.tls_dir),
            mesh_ca: resolve(raw.cluster.mesh_ca),
        };
        let nodes = raw
            .nodes
            .into_iter()
            .map(|node| NodeConfig {
                data_dir: resolve(node.data_dir),
                mesh_cert: resolve(node.mesh_cert),
                mesh_key: resolve(node.mesh_key),
                ..node
            })
            .collect();

        let file = ClusterFile {
            path: path.to_owned(),
            settings,
            nodes,
        };
        file.validate()?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |message: String| ClusterError::Invalid {
            path: self.path.clone(),
            message,
        };

        let mut ids = HashSet::new();
        let mut snowflake_nodes = HashSet::new();
        for node in &self.nodes {
            if !ids.insert(node.id.as_str()) {
                return Err(invalid(format!("node id {:?} appears twice", node.id)));
            }
            if node.roles.is_empty() {
                return Err(invalid(format!("node {:?} has no roles", node.id)));
            }
            if node.has_role(Role::Owner) {
                if node.mesh.is_none() {
                    return Err(invalid(format!("owner {:?} needs a mesh address", node.id)));
                }
                if node.data_dir.is_none() {
                    return Err(invalid(format!("owner {:?} needs a data_dir", node.id)));
                }
                if node.weight == 0 {
                    return Err(invalid(format!("owner {:?} has weight 0", node.id)));
                }
            }
            if node.has_role(Role::Edge) {
                if node.quic.is_none() {
                    return Err(invalid(format!("edge {:?} needs a quic address", node.id)));
                }
                if node.snowflake_node > 1023 {
                    return Err(invalid(format!(
                        "edge {:?} has snowflake_node {} above 1023",
                        node.id, node.snowflake_node
                    )));
                }
                if !snowflake_nodes.insert(node.snowflake_node) {
                    return Err(invalid(format!(
                        "snowflake_node {} is used by more than one edge",
                        node.snowflake_node
                    )));
                }
            }
        }
        if !self.nodes.iter().any(|n| n.has_role(Role::Owner)) {
            return Err(invalid("the cluster has no owner node".to_owned()));
        }
        if self.settings.token_key.is_none() && self.settings.token_public_key.is_none() {
            return Err(invalid(
                "[cluster] needs token_key or token_public_key".to_owned(),
            ));
        }
        Ok(())
    }

    /// Returns the node with this id.
    pub fn node(&self, id: &str) -> Result<&NodeConfig, ClusterError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ClusterError::UnknownNode {
                path: self.path.clone(),
                id: id.to_owned(),
            })
    }

    /// Owner nodes in file order.
    pub fn owners(&self) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(|n| n.has_role(Role::Owner))
    }

    /// Edge nodes in file order.
    pub fn edges(&self) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(|n| n.has_role(Role::Edge))
    }

    /// Returns the mesh TLS files of `node`, or `None` when the mesh runs without TLS.
    pub fn mesh_tls_paths(&self, node: &NodeConfig) -> Option<MeshTlsPaths> {
        let ca_cert = self.settings.mesh_ca.clone()?;
        let folder = ca_cert.parent().unwrap_or(Path::new(".")).to_owned();
        Some(MeshTlsPaths {
            cert: node
                .mesh_cert
                .clone()
                .unwrap_or_else(|| folder.join(format!("{}.pem", node.id))),
            key: node
                .mesh_key
                .clone()
                .unwrap_or_else(|| folder.join(format!("{}.key", node.id))),
            ca_cert,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [cluster]
        token_key = "token.key"

        [[node]]
        id = "owner-1"
        roles = ["owner"]
        mesh = "127.0.0.1:7401"
        data_dir = "owner-1"

        [[node]]
        id = "edge-1"
        roles = ["edge"]
        quic = "127.0.0.1:4433"
        snowflake_node = 1
    "#;

    #[test]
    fn parses_and_resolves_paths() {
        let file = ClusterFile::parse(Path::new("/srv/tidings/cluster.toml"), EXAMPLE).unwrap();
        assert_eq!(
            file.settings.token_key.as_deref(),
            Some(Path::new("/srv/tidings/token.key"))
        );
        let owner = file.node("owner-1").unwrap();
        assert_eq!(
            owner.data_dir.as_deref(),
            Some(Path::new("/srv/tidings/owner-1"))
        );
        assert_eq!(owner.weight, 1);
        assert_eq!(file.edges().count(), 1);
    }

    #[test]
    fn rejects_owner_without_mesh() {
        let text = EXAMPLE.replace("mesh = \"127.0.0.1:7401\"", "");
        let error = ClusterFile::parse(Path::new("c.toml"), &text).unwrap_err();
        assert!(
            error.to_string().contains("needs a mesh address"),
            "{error}"
        );
    }

    #[test]
    fn rejects_duplicate_ids() {
        let text = EXAMPLE.replace("edge-1", "owner-1");
        let error = ClusterFile::parse(Path::new("c.toml"), &text).unwrap_err();
        assert!(error.to_string().contains("appears twice"), "{error}");
    }

    #[test]
    fn unknown_node_is_named() {
        let file = ClusterFile::parse(Path::new("c.toml"), EXAMPLE).unwrap();
        let error = file.node("edge-9").unwrap_err();
        assert!(error.to_string().contains("edge-9"), "{error}");
    }
}
