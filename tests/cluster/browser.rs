//! The live status page in a real browser: Debian's headless Chromium,
//! driven over the Chrome DevTools Protocol. The page shows the group's
//! primary, follows a failover without a reload, shows that its stream was
//! lost and reconnects, and fits a phone's width.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::resources::{kill9_pid, service, service_pid, spec, wait_running_on};
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium, killed with its whole process group when dropped
/// (also when the test fails); its profile directory goes with it.
struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    /// The browser's DevTools websocket URL.
    ws_url: String,
}

impl Chromium {
    fn start() -> Chromium {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the status page test needs Debian's Chromium (`apt-get install chromium`)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMIUM)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                // Its own process group, so that the renderers die with it.
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            let mut seen = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(at) = line.find("ws://") {
                        let _ = tx.send(Ok(line[at..].trim().to_string()));
                        sent = true;
                    } else {
                        seen.push(line);
                    }
                }
                // Keep draining, so that Chromium never blocks on a full pipe.
            }
            if !sent {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let mut browser = Chromium {
            child,
            _profile: profile,
            ws_url: String::new(),
        };
        match rx.recv_timeout(WAIT) {
            Ok(Ok(url)) => browser.ws_url = url,
            Ok(Err(output)) => panic!("Chromium exited without a DevTools URL:\n{output}"),
            Err(_) => panic!("Chromium printed no \"DevTools listening on ws://\" within {WAIT:?}"),
        }
        browser
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol session attached to one page (flat sessions).
struct Page {
    ws: Ws,
    next_id: u64,
    session: String,
}

/// Bounds every DevTools call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

async fn call(ws: &mut Ws, id: u64, session: Option<&str>, method: &str, params: Value) -> Value {
    let mut msg = json!({ "id": id, "method": method, "params": params });
    if let Some(s) = session {
        msg["sessionId"] = json!(s);
    }
    let exchange = async {
        ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let frame = ws
                .next()
                .await
                .unwrap_or_else(|| panic!("DevTools closed the connection during {method}"))
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            // Events (no id) and answers to others are skipped.
            if v["id"].as_u64() == Some(id) {
                return v;
            }
        }
    };
    let v = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("DevTools did not answer {method} within {CALL_TIMEOUT:?}"));
    assert!(v.get("error").is_none(), "{method} failed: {v}");
    v["result"].clone()
}

impl Page {
    async fn open(browser: &Chromium) -> Page {
        let (mut ws, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(browser.ws_url.as_str()))
            .await
            .expect("connecting to DevTools timed out")
            .unwrap();
        let target = call(&mut ws, 1, None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = call(
            &mut ws,
            2,
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )
        .await;
        let session = attached["sessionId"].as_str().unwrap().to_string();
        let mut page = Page {
            ws,
            next_id: 3,
            session,
        };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        call(&mut self.ws, id, Some(&self.session.clone()), method, params).await
    }

    /// Evaluates `expression` in the page and returns its value as JSON.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression} threw: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expression` until `ok` accepts its value, failing after [`WAIT`].
    async fn wait_for(&mut self, what: &str, expression: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expression).await;
            if ok(&v) {
                return v;
            }
            if start.elapsed() > WAIT {
                let text = self.eval("document.body.innerText").await;
                panic!("the page did not show {what} within {WAIT:?}; last value {v}; the page reads:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `web` group's card as the page shows it: `PRIMARY|STATE`.
const WEB_CARD: &str = "(() => { const g = document.querySelector('[data-group=\"web\"]'); \
     return g ? g.getAttribute('data-primary') + '|' + g.getAttribute('data-state') : ''; })()";

#[test]
fn the_status_page_follows_a_failover_live_and_fits_a_phone() {
    let browser = Chromium::start();
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let file = spec(&dir, "spec.toml", "", &service("http", &dir.join("ledger")));
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The witness's page: it stays up while the primary goes.
    let url = format!("http://{}/", c.node("witness").http.unwrap());
    rt.block_on(async {
        let mut page = Page::open(&browser).await;
        page.call("Page.navigate", json!({ "url": url })).await;
        page.wait_for("web running on site-a", WEB_CARD, |v| v == "site-a|running")
            .await;
        let text = page.eval("document.body.innerText").await;
        let text = text.as_str().unwrap();
        assert!(text.contains(&c.cluster), "the cluster's name: {text}");
        assert!(text.contains("witness") && text.contains("site-b"), "the nodes: {text}");
        assert!(text.contains("spec version 1 applied"), "the last events: {text}");
        assert_eq!(page.eval("document.body.getAttribute('data-connected')").await, "true");
        // Marks this very document: a reload would lose the mark.
        page.eval("window.__tandemMark = 42").await;

        // A phone's width: nothing wider than the screen.
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 375, "height": 800, "deviceScaleFactor": 2, "mobile": true }),
        )
        .await;
        let width = page
            .wait_for(
                "the page laid out at 375 px",
                "[window.innerWidth, document.documentElement.scrollWidth]",
                |v| v[0] == 375,
            )
            .await;
        assert!(
            width[1].as_u64().unwrap() <= 375,
            "horizontal overflow at 375 px: scrollWidth {}",
            width[1]
        );

        // Lose the primary: the same page shows the new one, without a reload.
        if let Some(pid) = service_pid(&c, "site-a", "http") {
            kill9_pid(pid);
        }
        c.kill9("site-a");
        let lost = Instant::now();
        page.wait_for("web running on site-b", WEB_CARD, |v| v == "site-b|running")
            .await;
        eprintln!("the page showed the new primary {:?} after the kill", lost.elapsed());
        assert_eq!(page.eval("window.__tandemMark").await, 42, "the page was reloaded");
        let site_a = page
            .eval("document.querySelector('[data-node=\"site-a\"]').getAttribute('data-state')")
            .await;
        assert_ne!(site_a, "up", "site-a no longer shows up");
        let width = page.eval("document.documentElement.scrollWidth").await;
        assert!(
            width.as_u64().unwrap() <= 375,
            "horizontal overflow after the update: {width}"
        );

        // The page's own node goes: the page says so, then reconnects when it returns.
        c.kill9("witness");
        page.wait_for(
            "the connection-lost marker",
            "getComputedStyle(document.getElementById('conn')).display !== 'none' \
             && document.getElementById('conn').innerText",
            |v| v.as_str().is_some_and(|t| t.contains("Connection lost")),
        )
        .await;
        c.start("witness");
        page.wait_for(
            "the page connected again",
            "document.body.getAttribute('data-connected')",
            |v| v == "true",
        )
        .await;
        page.wait_for("web on site-b after reconnecting", WEB_CARD, |v| v == "site-b|running")
            .await;
        assert_eq!(page.eval("window.__tandemMark").await, 42, "the page was reloaded");
    });
    // An open status stream does not hold up a clean stop.
    let stopping = Instant::now();
    assert_eq!(c.sigterm("witness"), Some(0), "{}", c.logs_tail());
    let log = std::fs::read_to_string(&c.node("witness").log).unwrap();
    assert!(
        !log.contains("HTTP server did not drain"),
        "the status stream kept the HTTP server from stopping ({:?})",
        stopping.elapsed()
    );
    drop(browser);
}
