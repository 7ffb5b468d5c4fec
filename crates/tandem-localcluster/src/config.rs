//! What a local node's configuration file says, and the free ports it
//! listens on.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;

use tandem_core::NodeRole;

/// A node as the member list of every configuration names it.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub role: NodeRole,
    /// Its gRPC address, which the other nodes dial.
    pub address: SocketAddr,
}

/// Asks the kernel for a free port on `ip`. Another process could take it
/// before the agent binds it; the agent then says so and exits.
pub fn free_port(ip: impl Into<IpAddr>) -> io::Result<u16> {
    TcpListener::bind((ip.into(), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot find a free loopback port: {e}")))
}

/// One node's configuration file.
pub(crate) struct ConfigFile<'a> {
    pub cluster: &'a str,
    pub me: &'a Member,
    /// Added to a running cluster with `tandem members add`: never bootstraps.
    pub join: bool,
    pub data_dir: &'a Path,
    pub dns: SocketAddr,
    pub http: SocketAddr,
    /// The initial member list.
    pub members: &'a [Member],
}

impl ConfigFile<'_> {
    /// The file's text: `head` (comment lines), the cluster, the node and
    /// its listeners, the members, then `tail` (more TOML tables).
    pub fn text(&self, head: &str, tail: &str) -> String {
        let mut t = head.to_string();
        let _ = writeln!(t, "[cluster]\nname = \"{}\"", self.cluster);
        if self.join {
            let _ = writeln!(t, "join = true");
        }
        let _ = writeln!(
            t,
            "\n[node]\nname = \"{}\"\nrole = \"{}\"\ndata_dir = {:?}\ngrpc_listen = \"{}\"\ndns_listen = \"{}\"\nhttp_listen = \"{}\"\n",
            self.me.name,
            self.me.role,
            self.data_dir.display().to_string(),
            self.me.address,
            self.dns,
            self.http
        );
        for m in self.members {
            let _ = writeln!(
                t,
                "[[members]]\nname = \"{}\"\naddress = \"{}\"\nrole = \"{}\"\n",
                m.name, m.address, m.role
            );
        }
        t.push_str(tail);
        t
    }
}
