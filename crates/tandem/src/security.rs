//! Reading the credentials a node or the CLI uses: token files and TLS PEM
//! files. Errors name the key or option, the file and what is expected; a
//! token is never printed.

use std::path::{Path, PathBuf};

use tandem_api::auth::{AuthPolicy, Secret};
use tandem_core::config::{NodeConfig, TlsFiles};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tracing::warn;

use crate::Failure;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a token file: one line, trimmed, not empty, printable ASCII without
/// spaces (it goes into an HTTP header). `what` names the key or option in
/// errors. Warns when the file is readable by group or others.
pub fn read_token(path: &Path, what: &str) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("{what}: cannot read the token file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::input(format!(
            "{what}: expected a token (one line) in {}, the file is empty",
            path.display()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::input(format!(
            "{what}: expected a token of printable ASCII characters without spaces in {} (the token is not shown)",
            path.display()
        )));
    }
    warn_if_shared(path, what);
    Ok(token.to_string())
}

/// Logs a warning when a secret file is readable by group or others.
fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(
                file = %path.display(),
                key = what,
                mode = format!("{mode:o}"),
                "secret file readable by group or others; chmod 600 it"
            );
        }
    }
}

fn read_pem(path: &Path, what: &str, marker: &str, expected: &str) -> Result<Vec<u8>, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::input(format!("{what}: cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(Failure::input(format!(
            "{what}: expected {expected} in PEM form (a \"{marker}\" block) in {}",
            path.display()
        )));
    }
    Ok(bytes)
}

/// PEM contents of a certificate, its key and a CA.
pub struct TlsMaterial {
    pub identity: Option<Identity>,
    pub ca: Certificate,
}

/// Reads the PEM files; `names` are how the configuration or the CLI calls
/// `(cert, key, ca)` in errors.
pub fn read_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: &Path,
    names: (&str, &str, &str),
) -> Result<TlsMaterial, Failure> {
    let ca = read_pem(ca, names.2, "-----BEGIN CERTIFICATE-----", "the CA certificate")?;
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert = read_pem(cert, names.0, "-----BEGIN CERTIFICATE-----", "a certificate")?;
            let key_bytes = read_pem(key, names.1, "PRIVATE KEY-----", "a private key")?;
            warn_if_shared(key, names.1);
            Some(Identity::from_pem(cert, key_bytes))
        }
        (None, None) => None,
        (Some(_), None) => return Err(Failure::input(format!("{} needs {} as well", names.0, names.1))),
        (None, Some(_)) => return Err(Failure::input(format!("{} needs {} as well", names.1, names.0))),
    };
    Ok(TlsMaterial {
        identity,
        ca: Certificate::from_pem(ca),
    })
}

/// A client TLS configuration, checked now (a PEM that does not parse is an
/// error at start, not at the first connection).
pub fn client_tls(material: &TlsMaterial, files: &str) -> Result<ClientTlsConfig, Failure> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(material.ca.clone())
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(identity) = &material.identity {
        tls = tls.identity(identity.clone());
    }
    tonic::transport::Endpoint::from_static("https://127.0.0.1:1")
        .tls_config(tls.clone())
        .map_err(|e| Failure::input(format!("{files}: {}", crate::root_cause(&e))))?;
    Ok(tls)
}

/// What a node needs to enforce its `[security]` and `[tls]` configuration.
pub struct NodeSecurity {
    pub policy: AuthPolicy,
    pub server_tls: Option<ServerTlsConfig>,
    pub client_tls: Option<ClientTlsConfig>,
}

/// Reads the node's token and PEM files. `file`: the configuration file,
/// for errors.
pub fn load_node(config: &NodeConfig, file: &Path) -> Result<NodeSecurity, Failure> {
    let key = |k: &str| format!("{}: key `{k}`", file.display());
    let operator = config
        .security
        .operator_token_file
        .as_deref()
        .map(|p| read_token(p, &key("security.operator_token_file")))
        .transpose()?;
    let viewer = config
        .security
        .viewer_token_file
        .as_deref()
        .map(|p| read_token(p, &key("security.viewer_token_file")))
        .transpose()?;
    if operator.is_some() && operator == viewer {
        return Err(Failure::input(format!(
            "{}: expected a token different from the operator token (the token is not shown)",
            key("security.viewer_token_file")
        )));
    }
    let (server_tls, client_tls) = match &config.tls {
        None => (None, None),
        Some(TlsFiles { cert, key: k, ca }) => {
            let material = read_tls(
                Some(cert),
                Some(k),
                ca,
                (&key("tls.cert"), &key("tls.key"), &key("tls.ca")),
            )?;
            let files = format!(
                "{}: [tls] {}, {}, {}",
                file.display(),
                cert.display(),
                k.display(),
                ca.display()
            );
            let client = client_tls(&material, &files)?;
            let Some(identity) = material.identity else {
                return Err(Failure::input(format!("{}: expected cert and key", key("tls"))));
            };
            // Client certificates are optional at the TLS layer (an operator
            // may come with a token only); a presented one must be signed by
            // the CA, and peer calls need one (see tandem_api::auth).
            let server = ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(material.ca)
                .client_auth_optional(true)
                .timeout(HANDSHAKE_TIMEOUT);
            (Some(server), Some(client))
        }
    };
    if operator.is_some() && config.tls.is_none() && !config.grpc_listen.ip().is_loopback() {
        warn!(
            listen = %config.grpc_listen,
            "an operator token is set without [tls]: tokens travel in clear text, and node-to-node \
             traffic is not authenticated; configure [tls] on every node"
        );
    }
    Ok(NodeSecurity {
        policy: AuthPolicy {
            operator_token: operator.map(Secret::new),
            viewer_token: viewer.map(Secret::new),
            tls: config.tls.is_some(),
        },
        server_tls,
        client_tls,
    })
}

/// Resolves a relative path in the configuration against its directory.
pub fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}
