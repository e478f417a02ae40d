//! The web console in a real browser: Debian's headless Chromium driven through ChromeDriver (WebDriver),
//! against a running control process and the dataplane on the namespace test bed with real traffic.
//!
//! The story an engineer lives through: sign in with the token; see the segment map's edges appear after real
//! traffic and open one; edit a rule and meet a validation error on the field it concerns; fix it, commit, and
//! see the traffic change; roll back and see it change back. Along the way: rules health, connections,
//! explain, text from the API rendered escaped, a damaged history row said on the discovery page, tiers in the policy editor, a viewer token made on the tokens page (and the console signed in
//! with it showing no action the role lacks), and no errors in the browser console and no
//! Content-Security-Policy violation (the console is served over HTTPS with control's security headers; Chromium
//! trusts control's self-signed certificate by its public key, nothing else). Screenshots of every
//! step are written to `<target>/test-artifacts/console/`. Needs root (namespaces), chromium and
//! chromium-driver (`cargo xtask deps` installs them).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};
use testbed::{addr, Background, Options, Side, TestBed};

const OFFICE: &str = "10.99.0.11";
const SCADA: &str = "10.99.0.3";
const WAIT: Duration = Duration::from_secs(20);

/// ChromeDriver plus one browser session, driven synchronously from the test.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    driver_url: String,
    shots: PathBuf,
    shot_no: u32,
}

/// Records the page's Content-Security-Policy violations in `window.__cspViolations` (installed in every new
/// document before its own scripts run).
const CSP_RECORDER: &str = "window.__cspViolations = []; document.addEventListener('securitypolicyviolation', \
    (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));";

/// The base64 SHA-256 of the certificate's public key (SPKI), as Chromium's `--ignore-certificate-errors-spki-list`
/// takes it.
fn spki_sha256_base64(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | openssl enc -base64",
        )
        .arg("sh")
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Browser {
    /// Chromium with its profile in `profile`, trusting the certificate whose key is `trusted_spki` (see
    /// [`spki_sha256_base64`]).
    fn start(profile: &Path, trusted_spki: &str) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian package chromium-driver; `cargo xtask deps` installs it)",
            );
        let driver_url = format!("http://127.0.0.1:{port}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1440,1000", format!("--user-data-dir={}", profile.display()),
                         format!("--ignore-certificate-errors-spki-list={trusted_spki}")]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }))
        .unwrap();
        let client = rt.block_on(async {
            let deadline = Instant::now() + WAIT;
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&driver_url)
                    .await
                {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let shots = target.join("test-artifacts/console");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let browser = Browser {
            rt,
            client: Some(client),
            driver,
            driver_url,
            shots,
            shot_no: 0,
        };
        browser.chromedriver(
            "goog/cdp/execute",
            json!({"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": CSP_RECORDER}}),
        );
        browser
    }

    /// A ChromeDriver command of this session beyond WebDriver's (`path` under `/session/<id>/`).
    fn chromedriver(&self, path: &str, body: Value) -> Value {
        let sid = self.rt.block_on(self.c().session_id()).unwrap().unwrap();
        let url = format!("{}/session/{sid}/{path}", self.driver_url);
        let body = self.rt.block_on(async {
            reqwest::Client::new()
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        serde_json::from_str(&body).unwrap()
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    /// Waits until `css` matches an element whose text contains `text`; returns that text.
    fn wait_text(&self, css: &str, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            let found = self.rt.block_on(async {
                for e in self.c().find_all(Locator::Css(css)).await.ok()? {
                    if let Ok(t) = e.text().await {
                        if t.contains(text) {
                            return Some(t);
                        }
                        last = t;
                    }
                }
                None
            });
            if let Some(t) = found {
                return t;
            }
            if Instant::now() > deadline {
                self.shot("timeout");
                panic!(
                    "timed out waiting for {css:?} to contain {text:?}; last text seen: {last:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn wait(&self, css: &str) {
        self.wait_text(css, "");
    }

    /// Waits for an element matching `css`, then does `action` to it; `what` names the action if it fails.
    fn act<F, Fut>(&self, css: &str, what: &str, action: F)
    where
        F: FnOnce(Element) -> Fut,
        Fut: std::future::Future<Output = Result<(), CmdError>>,
    {
        self.wait(css);
        self.rt
            .block_on(async { action(self.c().find(Locator::Css(css)).await?).await })
            .unwrap_or_else(|e| panic!("{what} {css}: {e}"));
    }

    fn click(&self, css: &str) {
        self.act(css, "click", |e| async move { e.click().await });
    }

    /// Focuses the element matching `css` and presses Enter on it, as a keyboard user would.
    fn press_enter(&self, css: &str) {
        self.act(
            css,
            "Enter on",
            |e| async move { e.send_keys("\u{E007}").await },
        );
    }

    /// Clicks the element matching `css` whose text contains `text`.
    fn click_text(&self, css: &str, text: &str) {
        self.wait_text(css, text);
        self.rt
            .block_on(async {
                for e in self.c().find_all(Locator::Css(css)).await? {
                    if e.text().await?.contains(text) {
                        return e.click().await;
                    }
                }
                unreachable!("waited for it")
            })
            .unwrap_or_else(|e| panic!("click {css} {text:?}: {e}"));
    }

    /// Replaces the value of a form control by typing, as a user would.
    fn fill(&self, css: &str, text: &str) {
        self.act(css, "fill", |e| async move {
            e.clear().await?;
            e.send_keys(text).await
        });
    }

    fn select(&self, css: &str, value: &str) {
        self.act(css, &format!("select {value} in"), |e| async move {
            e.select_by_value(value).await
        });
    }

    fn count(&self, css: &str) -> usize {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .map(|v| v.len())
            .unwrap_or(0)
    }

    fn wait_gone(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        while self.count(css) > 0 {
            assert!(Instant::now() < deadline, "{css} did not go away");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn eval(&self, js: &str) -> Value {
        self.rt
            .block_on(self.c().execute(js, vec![]))
            .unwrap_or_else(|e| panic!("execute {js}: {e}"))
    }

    /// Saves a numbered screenshot (a test artifact).
    fn shot(&self, name: &str) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        let n = self.shot_no;
        std::fs::write(self.shots.join(format!("{n:02}-{name}.png")), png).unwrap();
    }

    fn next_shot(&mut self, name: &str) {
        self.shot_no += 1;
        self.shot(name);
    }

    /// The browser console's entries since the last call (ChromeDriver's log endpoint).
    fn console(&self) -> Vec<Value> {
        let v = self.chromedriver("se/log", json!({"type": "browser"}));
        v["value"].as_array().cloned().unwrap_or_default()
    }

    /// The Content-Security-Policy violations of the current document since the last call.
    fn csp_violations(&self) -> Vec<Value> {
        let v = self.eval(
            "const v = window.__cspViolations || ['the violation recorder is not installed']; \
             window.__cspViolations = []; return v;",
        );
        v.as_array().cloned().unwrap_or_default()
    }

    /// The console's warnings and errors since the last call.
    fn console_problems(&self) -> Vec<Value> {
        self.console()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .collect()
    }

    /// Asserts the console has no warnings or errors since the last call, and the page no CSP violation.
    fn assert_clean_console(&self, phase: &str) {
        let bad = self.console_problems();
        assert!(bad.is_empty(), "browser console during {phase}: {bad:#?}");
        let csp = self.csp_violations();
        assert!(csp.is_empty(), "CSP violations during {phase}: {csp:#?}");
    }

    /// Asserts the console's only warning or error since the last call is Chrome's note of one refused
    /// request with `status` (it logs every non-2xx answer, even one the page handles as intended).
    fn assert_only_refused(&self, status: u16, phase: &str) {
        let seen = self.console_problems();
        let expected = format!("status of {status}");
        assert!(
            seen.len() == 1
                && seen[0]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&expected),
            "browser console during {phase}: {seen:#?}"
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn get(side: &Side, from: &str, host: &str, port: u16) -> bool {
    fetches(side, Some(from), host, port)
}

fn active_version(c: &Control) -> u64 {
    c.call("GET", "/api/v1/active", None).unwrap().body["meta"]["version"]
        .as_u64()
        .unwrap()
}

/// The demo policy (config/policy-demo.json) imported and committed through the API, as automation would.
fn commit_demo_policy(c: &Control) {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy-demo.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let r = c.write("PUT", "/api/v1/draft", Some(&doc), &etag).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .write(
            "POST",
            "/api/v1/commit",
            Some(&json!({"comment": "demo policy"})),
            &r.etag(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

fn servers(bed: &TestBed) -> Vec<Background> {
    let www = bed.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small"), b"hello").unwrap();
    [(addr::B4, 5432), (SCADA, 8080)]
        .into_iter()
        .map(|(host, port)| file_server(&bed.b, host, port, &www))
        .collect()
}

/// Writes a row control cannot read (a 5-byte source address) into the history's current bucket, beside the
/// running control's own writes.
fn damage_history(file: &Path) {
    let db = rusqlite::Connection::open(file).unwrap();
    db.busy_timeout(WAIT).unwrap();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    db.execute(
        "INSERT INTO conversations VALUES (?1, ?2, ?3, 6, 22, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 0, 0)",
        rusqlite::params![
            (now_s - now_s % 3600) as i64,
            vec![10u8, 99, 0, 11, 7],
            vec![10u8, 99, 0, 3]
        ],
    )
    .unwrap();
}

#[test]
fn an_engineer_sees_edits_commits_and_rolls_back_in_the_console() {
    let mut opts = Options::new(dataplane_bin());
    opts.policy = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
    let bed = TestBed::start(&opts).unwrap();
    for (side, ip) in [(&bed.a, OFFICE), (&bed.b, SCADA)] {
        side.ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &side.iface])
            .unwrap();
    }
    let _servers = servers(&bed);
    let mut copts = ControlOptions::new(
        control_bin(),
        &bed.dir.join("control"),
        &bed.control_socket(),
    );
    copts.web_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    copts.extra = "[metrics]\npoll_ms = 200\n".into();
    let c = start_control(&copts);
    commit_demo_policy(&c);
    assert_eq!(active_version(&c), 2);

    let cert = c.cert.clone().expect("control serves HTTPS");
    let mut ui = Browser::start(&bed.dir.join("chromium"), &spki_sha256_base64(&cert));
    let base = format!("{}/", c.url);
    assert!(base.starts_with("https://"), "{base}");

    // ---- The page runs under the Content-Security-Policy, and a violation is seen: an inline style is refused,
    // recorded and logged.
    ui.goto(&base);
    ui.wait_text("form.signin h1", "Sign in");
    ui.eval(
        "const d = document.createElement('div'); d.setAttribute('style', 'color: red'); \
         document.body.append(d); return true;",
    );
    let deadline = Instant::now() + WAIT;
    let probe = loop {
        let seen = ui.csp_violations();
        if !seen.is_empty() || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        probe.len() == 1
            && probe[0]
                .as_str()
                .unwrap_or_default()
                .starts_with("style-src"),
        "{probe:?}"
    );
    let logged = ui.console_problems();
    assert!(
        logged.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Content Security Policy")),
        "{logged:#?}"
    );

    // ---- Sign in: a wrong token is refused on the page, the right one opens the dashboard.
    ui.goto(&base);
    ui.wait_text("form.signin h1", "Sign in");
    ui.fill("#token", "not-the-token");
    ui.click("form.signin button[type=submit]");
    ui.wait_text("#token-err", "not valid");
    ui.assert_only_refused(401, "the refused sign-in");
    ui.fill("#token", &c.token);
    ui.click("form.signin button[type=submit]");
    ui.wait_text("#tile-policy", "v2");
    ui.wait_text("#active-version", "policy v2");
    ui.next_shot("dashboard");

    // ---- Real traffic: office → database allowed, office → SCADA HMI denied, engineering → HMI allowed.
    assert!(get(&bed.a, OFFICE, addr::B4, 5432));
    assert!(!get(&bed.a, OFFICE, SCADA, 8080));
    assert!(get(&bed.a, addr::A4, SCADA, 8080));

    // ---- Segment map: the edges appear, told apart by verdict; opening one shows its flows and rule.
    ui.goto(&format!("{base}#/map"));
    ui.wait(r#"g.edge[data-edge="office→legacy-db"][data-class="allowed"]"#);
    ui.wait(r#"g.edge[data-edge="office→legacy-scada"][data-class="denied"]"#);
    ui.wait(r#"g.edge[data-edge="engineering→legacy-scada"][data-class="allowed"]"#);
    // Edges are thin curves: reach them with the keyboard (Tab, Enter), which the map supports.
    ui.press_enter(r#"g.edge[data-edge="office→legacy-db"]"#);
    ui.wait_text("#edge-rules", "#100 it-to-db");
    ui.wait_text("#edge-detail table", "10.99.0.2:5432");
    ui.next_shot("map-allowed-edge");
    ui.press_enter(r#"g.edge[data-edge="office→legacy-scada"]"#);
    ui.wait_text("#edge-rules", "the default action");
    ui.wait_text("#edge-detail table", "deny");
    ui.next_shot("map-denied-edge");

    // ---- Edit rule 110 (engineering → HMI) so the office may use the HMI too; a typo in the service first.
    ui.goto(&format!("{base}#/policy/rules"));
    ui.wait(r#"tr[data-rule="110"]"#);
    ui.click(r#"button[aria-label="Edit rule 110"]"#);
    ui.wait_text("dialog[open] h2", "Rule #110");
    ui.select("dialog[open] select[name=from_kind]", "labels");
    ui.fill("dialog[open] input[name=from_value]", "zone=it");
    ui.fill("dialog[open] input[name=service]", "hmi-wbe");
    ui.click("dialog[open] button[type=submit]");
    let err = ui.wait_text(
        r#"dialog[open] .field.invalid[data-field="service"] .field-error"#,
        "unknown service",
    );
    assert!(err.contains("hmi-wbe"), "{err}");
    ui.wait_text("dialog[open] .form-note", "does not validate");
    ui.next_shot("validation-error-on-field");
    // The draft holds the invalid edit; commit is refused until it is fixed.
    let v = c.call("POST", "/api/v1/validate", None).unwrap().body;
    assert_eq!(v["valid"], false, "{v}");
    ui.fill("dialog[open] input[name=service]", "hmi-web");
    ui.click("dialog[open] button[type=submit]");
    ui.wait_gone("dialog[open]");
    ui.wait_text("#validation", "The draft validates");
    ui.wait_text(r#"tr[data-rule="110"]"#, "zone=it");

    ui.assert_clean_console("sign-in, dashboard, map and rule edit");

    // A body the API cannot take (a prefix without its length) is refused, with the message on the field.
    ui.goto(&format!("{base}#/policy/segments"));
    ui.click_text("button", "New segment");
    ui.fill("dialog[open] input[name=name]", "historian");
    ui.fill("dialog[open] textarea[name=prefixes]", "10.99.0.4");
    ui.click("dialog[open] button[type=submit]");
    ui.wait_text(
        r#"dialog[open] .field.invalid[data-field="prefixes"] .field-error"#,
        "10.99.0.4/32",
    );
    ui.next_shot("segment-body-error");
    ui.assert_only_refused(422, "the refused segment");
    ui.click("dialog[open] button[value=cancel]");
    ui.wait_gone("dialog[open]");

    // ---- Diff and commit (with the confirm dialog), then the traffic changes.
    ui.goto(&format!("{base}#/policy/commit"));
    ui.wait_text("#diff", "110");
    ui.fill("input[name=comment]", "office may use the HMI");
    ui.next_shot("diff");
    ui.click_text("button", "Commit…");
    ui.wait_text("dialog[open]", "connections tracked now would be cut");
    ui.next_shot("commit-confirm");
    ui.click("dialog[open] button[value=commit]");
    ui.wait_text(".toast", "Committed: version 3");
    assert_eq!(active_version(&c), 3);
    assert!(
        get(&bed.a, OFFICE, SCADA, 8080),
        "the office reaches the HMI after the commit"
    );
    ui.wait_text("#active-version", "policy v3");

    // ---- Roll back to version 2: the office loses the HMI again.
    ui.goto(&format!("{base}#/policy/history"));
    ui.wait(r#"tr[data-version="2"]"#);
    ui.click(r#"button[aria-label="Roll back to version 2"]"#);
    ui.wait_text("dialog[open]", "Roll back to version 2");
    ui.next_shot("rollback-confirm");
    ui.click("dialog[open] button[value=yes]");
    ui.wait_text(".toast", "Rolled back: version 4");
    assert_eq!(active_version(&c), 4);
    let v4 = c.call("GET", "/api/v1/versions/4", None).unwrap().body;
    let v2 = c.call("GET", "/api/v1/versions/2", None).unwrap().body;
    assert_eq!(
        v4["policy"], v2["policy"],
        "the rollback enforces version 2's document"
    );
    assert!(
        !get(&bed.a, OFFICE, SCADA, 8080),
        "denied again after the rollback"
    );
    ui.wait(r#"tr[data-version="4"]"#);
    ui.next_shot("history");

    // ---- A commit on trial, reverted at once from its banner: the office loses the HMI again.
    ui.goto(&format!("{base}#/policy/commit"));
    ui.wait_text("#diff", "110");
    ui.click("#with-confirm");
    ui.click_text("button", "Commit…");
    ui.wait_text("dialog[open]", "Unless you confirm within");
    ui.click("dialog[open] button[value=commit]");
    ui.wait_text(".toast", "Committed: version 5");
    assert!(get(&bed.a, OFFICE, SCADA, 8080), "allowed while on trial");
    ui.wait_text("#pending", "on trial");
    ui.next_shot("commit-on-trial");
    ui.click_text("#pending button", "Revert now");
    ui.wait_text(".toast", "Version 5 reverted");
    assert_eq!(active_version(&c), 6);
    assert!(
        !get(&bed.a, OFFICE, SCADA, 8080),
        "denied again after the revert"
    );

    // ---- A commit scheduled by automation shows on the commit page, and is cancelled there.
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let at = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(86_400),
    )
    .to_string();
    let r = c
        .write(
            "POST",
            "/api/v1/scheduled-commit",
            Some(&json!({"at": at, "comment": "the Saturday window"})),
            &etag,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    // (Through another page: the same hash again would not render anew.)
    ui.goto(&format!("{base}#/policy/history"));
    ui.wait(r#"tr[data-version="6"]"#);
    ui.goto(&format!("{base}#/policy/commit"));
    ui.wait_text("#scheduled", "the Saturday window");
    ui.next_shot("scheduled-commit");
    ui.click_text("#scheduled button", "Cancel it");
    ui.wait_text(".toast", "Scheduled commit cancelled");
    let r = c.call("GET", "/api/v1/scheduled-commit", None).unwrap();
    assert_eq!(r.body["scheduled"], Value::Null);

    // ---- Discovery: the flow history drilled down from a segment pair to its conversations; rules suggested.
    // A damaged row in the history (a 5-byte source address, as a broken disk could leave) is skipped and said.
    damage_history(&copts.store_dir().join("history.sqlite"));
    ui.goto(&format!("{base}#/discovery"));
    ui.wait(r#"#pairs tr[data-pair="office>legacy-db"]"#);
    ui.wait_text(
        "#pairs .banner.warn",
        "1 stored row could not be read and was left out",
    );
    ui.next_shot("discovery");
    ui.click(r#"button[aria-label="Hosts from office to legacy-db"]"#);
    ui.wait_text("#hosts", OFFICE);
    ui.click("#hosts tbody tr button");
    ui.wait_text("#services", "5432");
    ui.click("#services tbody tr button");
    ui.wait_text("#services h3", "Conversations");
    // Each conversation names the gateway that reported it (the page's gateway filter defaults to every one).
    ui.wait_text("#services h3 + table", "local");
    ui.next_shot("discovery-drill-down");
    ui.click_text("#suggest button", "Suggest");
    ui.wait_text("#coverage", "The draft allows");
    ui.wait_text("#proposal .banner.warn", "the history store may be damaged");

    // ---- Explain: the draft (still with the edit) allows office → HMI, the active policy does not.
    ui.goto(&format!("{base}#/explain"));
    ui.fill("input[name=src]", OFFICE);
    ui.fill("input[name=dst]", SCADA);
    ui.fill("input[name=port]", "8080");
    ui.click("form.editor button[type=submit]");
    ui.wait_text(r#"[data-side="draft"] .verdict-line"#, "allow");
    ui.wait_text(r#"[data-side="draft"]"#, "rule #110 eng-to-hmi");
    ui.wait_text(r#"[data-side="active"] .verdict-line"#, "deny");
    ui.next_shot("explain");

    // ---- Rules health: hits per rule from the dataplane's counters; rule 100 has been hit.
    ui.goto(&format!("{base}#/health"));
    ui.wait(r#"tr[data-rule="100"]"#);
    let row = ui.wait_text(r#"tr[data-rule="100"]"#, "ago");
    assert!(!row.contains("never"), "{row}");
    ui.next_shot("rules-health");

    // ---- Connections: the table lists the real flows; kill the ones to the database.
    assert!(get(&bed.a, OFFICE, addr::B4, 5432));
    ui.goto(&format!("{base}#/connections"));
    ui.fill("input[name=addr]", addr::B4);
    ui.click("form.toolbar button[type=submit]");
    ui.wait_text("table.grid tbody", "10.99.0.2:5432");
    ui.next_shot("connections");
    let before = ui.count("table.grid tbody tr[data-flow]");
    assert!(before > 0);
    ui.click("table.grid tbody tr[data-flow] button.danger");
    ui.click("dialog[open] button[value=kill]");
    ui.wait_text(".toast", "connection(s) killed");
    ui.wait_text("table.grid tbody", "No tracked connection matches");

    // ---- Gateways: the one gateway (`local`, the config's dataplane_socket) is up and runs the active version;
    // it has no [ha], so it is standalone.
    ui.goto(&format!("{base}#/gateways"));
    ui.wait_text(r#"tr[data-gateway="local"]"#, "in sync");
    ui.wait_text(r#"tr[data-gateway="local"]"#, "standalone");
    ui.wait_text("#gateways-summary", "1 of 1 gateway(s)");
    ui.next_shot("gateways");

    // ---- Text from the API is rendered as text: a rule named like markup stays inert.
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let evil = "<img src=x onerror=\"window.__xss=1\">";
    let r = c
        .write(
            "POST",
            "/api/v1/draft/rules",
            Some(
                &json!({"id": 999, "name": evil, "description": "<b>bold?</b>",
                         "from": "any", "to": "any", "service": "any", "action": "deny"}),
            ),
            &etag,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    ui.goto(&format!("{base}#/policy/rules"));
    let text = ui.wait_text(r#"tr[data-rule="999"]"#, "onerror");
    assert!(
        text.contains(evil) && text.contains("<b>bold?</b>"),
        "{text}"
    );
    assert_eq!(
        ui.count(r#"tr[data-rule="999"] img, tr[data-rule="999"] b"#),
        0
    );
    assert_eq!(ui.eval("return window.__xss === undefined;"), json!(true));
    ui.next_shot("escaped-text");

    // ---- Tiers: the draft's rules become the tier main, a tier global is added before it with a pass rule,
    // its default set, and the tiers reordered; the draft follows every step (nothing is committed).
    ui.click_text(".toolbar button", "Use tiers");
    ui.wait(r#"section[data-tier="main"] tr[data-rule="110"]"#);
    ui.click_text(".toolbar button", "New tier");
    ui.fill("dialog[open] input[name=tier-name]", "global");
    ui.select("dialog[open] select[name=tier-where]", "first");
    ui.click("dialog[open] button[value=add]");
    ui.wait(r#"section[data-tier="global"]"#);
    ui.click(r#"button[aria-label="New rule in tier global"]"#);
    ui.fill("dialog[open] input[name=name]", "to-the-segment-tier");
    ui.select("dialog[open] select[name=action]", "pass");
    ui.click("dialog[open] button[type=submit]");
    ui.wait_gone("dialog[open]");
    ui.wait(r#"section[data-tier="global"] tr[data-rule]"#);
    ui.select(r#"select[name="default-global"]"#, "deny");
    ui.wait_text(".toast", "default deny");
    ui.next_shot("tiers");
    let draft = c.call("GET", "/api/v1/draft", None).unwrap().body;
    assert_eq!(draft["format"], "bulkhead.policy/v2", "{draft}");
    let tiers: Vec<(&str, &str)> = draft["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["default"].as_str().unwrap()))
        .collect();
    assert_eq!(tiers, [("global", "deny"), ("main", "pass")]);
    assert_eq!(draft["tiers"][0]["rules"][0]["action"], "pass");
    ui.click(r#"button[aria-label="Move tier global down"]"#);
    ui.wait(r#"section[data-tier="main"] + section[data-tier="global"]"#);
    let draft = c.call("GET", "/api/v1/draft", None).unwrap().body;
    assert_eq!(draft["tiers"][1]["name"], "global", "{draft}");
    ui.assert_clean_console("tiers");

    // ---- Tokens: the admin creates a viewer token, whose secret is shown once; signed in with it, the console
    // shows no action the role lacks.
    ui.goto(&format!("{base}#/tokens"));
    ui.wait(r#"tr[data-identity="admin"]"#);
    ui.fill("#token-create input[name=identity]", "auditor");
    ui.select("#token-create select[name=role]", "viewer");
    ui.select("#token-create select[name=expires_in_s]", "2592000");
    ui.click("#token-create button[type=submit]");
    ui.wait_text("dialog[open]", "shown only now");
    let secret = ui.wait_text("dialog[open] #new-secret", "");
    assert_eq!(secret.len(), 64, "{secret}");
    ui.next_shot("token-created");
    ui.click("dialog[open] form button");
    ui.wait_gone("dialog[open]");
    ui.wait_text(r#"tr[data-identity="auditor"]"#, "viewer");
    ui.click("#logout");
    ui.fill("#token", &secret);
    ui.click("form.signin button[type=submit]");
    ui.wait_text("#whoami", "auditor (viewer)");
    ui.goto(&format!("{base}#/policy/rules"));
    ui.wait(r#"tr[data-rule="110"]"#);
    let hidden = "return [...document.querySelectorAll('[data-needs]')]
        .every((e) => getComputedStyle(e).display === 'none');";
    assert_eq!(
        ui.eval(hidden),
        json!(true),
        "an action the viewer lacks is shown"
    );
    ui.next_shot("viewer-policy");
    ui.goto(&format!("{base}#/policy/history"));
    ui.wait(r#"tr[data-version="2"]"#);
    assert_eq!(
        ui.eval(hidden),
        json!(true),
        "an action the viewer lacks is shown"
    );

    // ---- The dashboard again, now with traffic behind it.
    ui.goto(&format!("{base}#/dashboard"));
    ui.wait_text("#tile-policy", "v6");
    ui.wait("#chart-throughput canvas");
    ui.next_shot("dashboard-after");

    ui.assert_clean_console("the rest of the session");
}
