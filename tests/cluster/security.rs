//! Security end to end: operator and viewer tokens, mutual TLS between the
//! nodes and for the CLI, refusals with their reasons, and secrets kept out
//! of logs, events and status.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const OPERATOR_TOKEN: &str = "op-7f3c9a1e5b2d48c6a0e4f1b2c3d4e5f6";
const VIEWER_TOKEN: &str = "view-2b8e4d6f0a1c3e5a7b9d1f3e5c7a9b0d";

fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = write(dir, name, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Fails the test if a token appears in any node's log or in `text`.
fn assert_no_token(c: &TestCluster, text: &str) {
    for token in [OPERATOR_TOKEN, VIEWER_TOKEN] {
        assert!(!text.contains(token), "a token appears in output:\n{text}");
        for n in &c.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            assert!(!log.contains(token), "a token appears in the log of {}", n.name);
        }
    }
}

#[test]
fn tokens_guard_operator_calls_and_reads_when_a_viewer_token_is_set() {
    let secrets = tempfile::tempdir().unwrap();
    // Trailing newlines and spaces are trimmed.
    let operator = secret_file(secrets.path(), "operator.token", &format!("{OPERATOR_TOKEN}\n"));
    let viewer = secret_file(secrets.path(), "viewer.token", &format!("  {VIEWER_TOKEN}  \n"));
    let wrong = secret_file(secrets.path(), "wrong.token", "not-a-token-of-this-cluster\n");
    let spec = write(secrets.path(), "spec.toml", "# refused before it is read\n");
    let mut c = TestCluster::three_with(&format!(
        "\n[security]\noperator_token_file = \"{}\"\nviewer_token_file = \"{}\"\n",
        s(&operator),
        s(&viewer)
    ));
    // The harness's status polls use the viewer token.
    c.client_args = vec!["--token-file".into(), s(&viewer).into()];
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let other = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != coordinator && n != "witness")
        .unwrap();

    // No credential: even status is refused, with the reason, exit code 2.
    let out = tandem(&[
        "status",
        "--endpoint",
        &c.node(&other).address.clone(),
        "--timeout",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no credential: GetStatus needs a viewer or operator token"),
        "{}",
        stderr(&out)
    );
    let out = tandem(&[
        "annotate",
        "hello",
        "--endpoint",
        &c.node(&other).address.clone(),
        "--timeout",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no credential: Annotate needs an operator token (--token-file) or a client certificate"),
        "{}",
        stderr(&out)
    );

    // The viewer token reads, but may not change anything.
    let status = c.status_of(&other);
    assert_eq!(status["coordinator"], coordinator.as_str());
    for (args, method) in [
        (vec!["annotate", "from a viewer"], "Annotate"),
        (vec!["apply", "-f", s(&spec)], "ApplySpec"),
        (vec!["resource", "cleanup"], "CleanupResource"),
        (vec!["switchover", "web"], "Switchover"),
        (vec!["failover", "web"], "Failover"),
        (vec!["standby", "site-a"], "SetStandby"),
        (vec!["maintenance", "on"], "SetMaintenance"),
    ] {
        let out = c.cli(&other, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "the viewer token may not call {method}: it needs an operator credential"
            )),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // A token of no one.
    let out = tandem(&[
        "annotate",
        "hello",
        "--endpoint",
        &c.node(&coordinator).address.clone(),
        "--token-file",
        s(&wrong),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the bearer token is not valid"),
        "{}",
        stderr(&out)
    );

    // The operator token works on the coordinator and, forwarded with the
    // call, through another node; the environment variable works too.
    let viewer_args = std::mem::replace(&mut c.client_args, vec!["--token-file".into(), s(&operator).into()]);
    c.cli_ok(&coordinator, &["annotate", "note on the coordinator"]);
    c.cli_ok(&other, &["annotate", "note forwarded"]);
    c.client_args = viewer_args;
    let out = Command::new(BIN)
        .args([
            "annotate",
            "note with the variable",
            "--endpoint",
            &c.node(&other).address.clone(),
            "--timeout",
            "5s",
        ])
        .env("TANDEM_TOKEN_FILE", &operator)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Events name how the writer authenticated; the viewer reads them (from
    // that node's applied state: wait until it applied the last note).
    let events = c.wait_for("every note applied", |c| {
        let events = stdout(&c.cli_ok(&other, &["events", "--output", "json"]));
        events.contains("note with the variable").then_some(events)
    });
    for note in ["note on the coordinator", "note forwarded", "note with the variable"] {
        let line = events
            .lines()
            .find(|l| l.contains(note))
            .unwrap_or_else(|| panic!("{note:?} not in events:\n{events}"));
        assert!(line.contains("(operator token)"), "{line}");
    }
    assert!(!events.contains("from a viewer"), "{events}");

    // Refusals are logged with the method and the reason (never the token).
    c.wait_for_log(&other, "call refused");
    let log = std::fs::read_to_string(&c.node(&other).log).unwrap();
    for (method, reason) in [
        ("GetStatus", "no_credential"),
        ("Annotate", "no_credential"),
        ("Annotate", "viewer_not_allowed"),
        ("ApplySpec", "viewer_not_allowed"),
        ("CleanupResource", "viewer_not_allowed"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("call refused") && l.contains(&format!("method={method}")) && l.contains(reason)),
            "no refusal of {method} ({reason}) logged on {other}"
        );
    }
    // Counted in the metrics, by method and reason.
    let (code, metrics) = http_get(c.node(&other).http, "/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("tandem_api_refused_total{method=\"Switchover\",reason=\"viewer_not_allowed\"} 1"),
        "{metrics}"
    );
    let coordinator_log = std::fs::read_to_string(&c.node(&coordinator).log).unwrap();
    assert!(
        coordinator_log
            .lines()
            .any(|l| l.contains("call refused") && l.contains("invalid_token")),
        "no invalid_token refusal logged on {coordinator}"
    );

    let status = stdout(&c.cli_ok(&other, &["status", "--output", "json"]));
    assert_no_token(&c, &format!("{events}\n{status}"));
}

#[test]
fn an_empty_token_file_is_refused_at_start_naming_the_key_and_file() {
    let secrets = tempfile::tempdir().unwrap();
    let empty = secret_file(secrets.path(), "operator.token", " \n");
    let c = TestCluster::new(&[("solo", "member")]);
    c.append_config(
        "solo",
        &format!("\n[security]\noperator_token_file = \"{}\"\n", s(&empty)),
    );
    let out = tandem(&["agent", "--config", s(&c.node("solo").config)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("key `security.operator_token_file`"), "{err}");
    assert!(err.contains(&format!("{}, the file is empty", s(&empty))), "{err}");
}

/// The README's commands: a CA, a certificate per node valid for its
/// address, and an operator's client certificate.
fn make_pki(dir: &Path, ca_name: &str, nodes: &[&str], clients: &[&str]) {
    let mut script = format!(
        "set -e\n\
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
           -keyout {ca_name}.key -out {ca_name}.pem -subj \"/CN={ca_name}\" \
           -addext \"basicConstraints=critical,CA:TRUE\" -addext \"keyUsage=critical,keyCertSign,cRLSign\"\n"
    );
    for (name, ext) in nodes
        .iter()
        .map(|n| {
            (
                n,
                "subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth",
            )
        })
        .chain(clients.iter().map(|n| (n, "extendedKeyUsage=clientAuth")))
    {
        script.push_str(&format!(
            "printf '{ext}\\n' > {name}.ext\n\
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout {name}.key -out {name}.csr -subj \"/CN={name}\"\n\
             openssl x509 -req -in {name}.csr -CA {ca_name}.pem -CAkey {ca_name}.key -CAcreateserial \
               -days 825 -out {name}.pem -extfile {name}.ext\n"
        ));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl failed: {}", stderr(&out));
}

#[test]
fn nodes_talk_over_mutual_tls_and_the_cli_uses_a_client_certificate_or_a_token() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    make_pki(dir, "ca", &["site-a", "site-b", "witness"], &["operator"]);
    make_pki(dir, "rogue-ca", &["rogue-node"], &["rogue"]);
    let operator = secret_file(dir, "operator.token", OPERATOR_TOKEN);
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();

    let mut c = TestCluster::three();
    for n in ["site-a", "site-b", "witness"] {
        c.append_config(
            n,
            &format!(
                "\n[security]\noperator_token_file = \"{}\"\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                s(&operator),
                p(&format!("{n}.pem")),
                p(&format!("{n}.key")),
                p("ca.pem")
            ),
        );
    }
    let client_cert = vec![
        "--ca".to_string(),
        p("ca.pem"),
        "--cert".into(),
        p("operator.pem"),
        "--key".into(),
        p("operator.key"),
    ];
    c.client_args = client_cert.clone();
    c.start_all();
    // Heartbeats and Raft run over TLS: all three up, one coordinator.
    let coordinator = c.wait_for_agreed_coordinator(None);
    let other = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != coordinator && n != "witness")
        .unwrap();
    let address = |n: &str| c.node(n).address.clone();

    // The client certificate is an operator credential, also forwarded.
    c.cli_ok(&coordinator, &["annotate", "by certificate"]);
    c.cli_ok(&other, &["annotate", "by certificate, forwarded"]);
    // Over TLS without a client certificate, the operator token works.
    let out = tandem(&[
        "annotate",
        "by token over tls",
        "--endpoint",
        &address(&other),
        "--ca",
        &p("ca.pem"),
        "--token-file",
        s(&operator),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = c.wait_for("every note applied", |c| {
        let events = stdout(&c.cli_ok(&other, &["events", "--output", "json"]));
        events.contains("by token over tls").then_some(events)
    });
    let actor_of = |note: &str| {
        events
            .lines()
            .find(|l| l.contains(&format!("\"{note}\"")))
            .unwrap_or_else(|| panic!("{note:?} not in events:\n{events}"))
            .to_string()
    };
    assert!(actor_of("by certificate").contains("(client cert CN=operator)"));
    assert!(actor_of("by certificate, forwarded").contains("(client cert CN=operator)"));
    assert!(actor_of("by token over tls").contains("(operator token)"));

    // TLS without any credential: reads are open, operator calls are not.
    let tls_only = ["--endpoint", &address(&other), "--ca", &p("ca.pem"), "--timeout", "5s"];
    let out = tandem(&[&["status"], &tls_only[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tandem(&[&["annotate", "anonymous"], &tls_only[..]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no credential"), "{}", stderr(&out));

    // Plain text to a TLS node fails.
    let out = tandem(&["status", "--endpoint", &address(&other), "--timeout", "3s"]);
    assert!(!out.status.success());

    // A certificate from another CA is refused, by the CLI and on the wire.
    let rogue = [
        "--endpoint",
        &address(&other),
        "--ca",
        &p("ca.pem"),
        "--cert",
        &p("rogue.pem"),
        "--key",
        &p("rogue.key"),
        "--timeout",
        "3s",
    ];
    for args in [&["annotate", "rogue"][..], &["status"][..]] {
        let out = tandem(&[args, &rogue[..]].concat());
        assert!(!out.status.success(), "{args:?} with a rogue certificate succeeded");
    }
    // A node that trusts the rogue CA cannot even verify ours.
    let out = tandem(&[
        "status",
        "--endpoint",
        &address(&other),
        "--ca",
        &p("rogue-ca.pem"),
        "--timeout",
        "3s",
    ]);
    assert!(!out.status.success());

    // Peer calls: a rogue node's certificate fails the handshake; without a
    // client certificate the call is refused with the reason.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tandem_proto::v1::HeartbeatRequest;
        use tandem_proto::v1::peer_client::PeerClient;
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let ca = Certificate::from_pem(std::fs::read(p("ca.pem")).unwrap());
        let heartbeat = |identity: Option<Identity>| {
            let mut tls = ClientTlsConfig::new().ca_certificate(ca.clone());
            if let Some(i) = identity {
                tls = tls.identity(i);
            }
            let endpoint = Endpoint::from_shared(format!("https://{}", address(&coordinator)))
                .unwrap()
                .tls_config(tls)
                .unwrap();
            let cluster = c.cluster.clone();
            async move {
                let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
                PeerClient::new(channel)
                    .heartbeat(HeartbeatRequest {
                        cluster,
                        node: "rogue-node".into(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
        };
        let rogue_node = Identity::from_pem(
            std::fs::read(p("rogue-node.pem")).unwrap(),
            std::fs::read(p("rogue-node.key")).unwrap(),
        );
        assert!(heartbeat(Some(rogue_node)).await.is_err());
        let err = heartbeat(None).await.unwrap_err();
        assert!(err.contains("Unauthenticated"), "{err}");
        assert!(err.contains("client certificate"), "{err}");

        // A cluster certificate of someone else (the operator's) may not
        // report for a node: a forged `stopped` would move a running group.
        let operator = Identity::from_pem(
            std::fs::read(p("operator.pem")).unwrap(),
            std::fs::read(p("operator.key")).unwrap(),
        );
        let endpoint = Endpoint::from_shared(format!("https://{}", address(&coordinator)))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()).identity(operator))
            .unwrap();
        let forged = serde_json::json!({
            "type": "report", "node": "site-a", "group": "web", "failed_resource": null,
            "report": {"epoch": 99, "phase": "stopped", "resources": [], "at_unix_ms": 1}
        });
        let err = PeerClient::new(endpoint.connect().await.unwrap())
            .report(tandem_proto::v1::RaftMessage {
                cluster: c.cluster.clone(),
                json: forged.to_string().into_bytes(),
                payload: Vec::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(
            err.message()
                .contains("a report for site-a must come with site-a's certificate"),
            "{err:?}"
        );
    });
    c.wait_for_log(&coordinator, "no_client_cert");
    // The cluster is unharmed.
    assert_eq!(c.wait_for_agreed_coordinator(None), coordinator);
}
