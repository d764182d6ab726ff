//! A real browser for the console's tests: Debian's headless Chromium,
//! driven over WebDriver by its own chromedriver (one per test, on a free
//! port), through fantoccini.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::{free_port, wait_for};

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// The console's base URL: `http://addr/console`.
    pub base: String,
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    /// Starts chromedriver and a headless Chromium on the console of the
    /// server at `addr`.
    pub async fn open(addr: std::net::SocketAddr) -> Self {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/lib.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1400"],
            }),
        );
        let client = wait_for(Duration::from_secs(30), "chromedriver to answer", || {
            let (url, caps) = (url.clone(), caps.clone());
            async move {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        Self {
            client,
            driver,
            base: format!("http://{addr}/console"),
        }
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("page loads");
    }

    /// The current page's path after `/console`.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        let full = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        full.strip_prefix("/console").unwrap_or(&full).to_owned()
    }

    /// The visible text of the page's `<main>`.
    pub async fn text(&self) -> String {
        self.client
            .find(Locator::Css("main"))
            .await
            .expect("a main element")
            .text()
            .await
            .unwrap()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.expect(css);
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks what `css` finds and waits for the page it leads to: the
    /// old document's root goes stale, the new one finishes loading.
    /// WebDriver's click itself does not wait for a navigation.
    pub async fn click(&self, css: &str) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        self.client
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .unwrap();
        wait_for(Duration::from_secs(30), "the next page", || {
            let old = old.clone();
            async move {
                let gone = old.tag_name().await.is_err();
                let loaded = self
                    .client
                    .execute("return document.readyState", vec![])
                    .await
                    .ok()
                    .is_some_and(|state| state == "complete");
                (gone && loaded).then_some(())
            }
        })
        .await;
    }

    /// Logs in with `token` through the form, and turns the overview's
    /// live refresh off, so no reload races a test's next step.
    pub async fn log_in(&self, token: &str) {
        self.goto("/login").await;
        self.fill("#token", token).await;
        self.click("main form button[type=submit]").await;
        self.client
            .execute("sessionStorage.setItem('console-refresh', 'off')", vec![])
            .await
            .unwrap();
    }

    /// Writes the page as `target/console/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Accessibility basics of the page, checked in the browser: every
    /// control has a label, and every piece of text has a contrast of at
    /// least 4.5:1 against the background it is drawn on (WCAG AA).
    pub async fn assert_accessible(&self, page: &str) {
        let problems = self
            .client
            .execute(ACCESSIBILITY_CHECK, vec![])
            .await
            .expect("the check runs");
        let problems: Vec<String> = serde_json::from_value(problems).unwrap();
        assert!(problems.is_empty(), "{page}: {problems:#?}");
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// chromedriver and the Chromium it started go with the test, passed or
/// failed: its children first, since a killed chromedriver leaves them.
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.driver.id().to_string()])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const ACCESSIBILITY_CHECK: &str = r#"
const problems = [];
for (const c of document.querySelectorAll('input:not([type=hidden]), select, textarea, button')) {
  const named = (c.labels && c.labels.length > 0) || c.getAttribute('aria-label') || (c.tagName === 'BUTTON' && c.textContent.trim());
  if (!named) problems.push('unlabelled ' + c.outerHTML.slice(0, 80));
}
const rgb = s => (s.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = el => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (!node.textContent.trim()) continue;
  const el = node.parentElement;
  if (!el || el.closest('svg') || el.offsetParent === null) continue;
  const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
  const bg = lum(background(el));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ' for "' + node.textContent.trim().slice(0, 40) + '"');
}
return problems;
"#;
