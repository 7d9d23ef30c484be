//! The dashboard in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `cargo xtask test`) loads `/` from the admin listener of a
//! proxy with traffic; the rendered page shows the upstream and its
//! endpoints, and an endpoint's ejection within seconds.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, config, get, proxy};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium on the dashboard with `output` (`--dump-dom` or
/// `--screenshot=...`); its stdout. Bounded: it is killed after 60 s.
async fn chromium(admin: SocketAddr, profile: &Path, output: &str, pacing: &str) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's `chromium` (cargo xtask test does)"
    );
    let (profile, output, pacing) = (profile.to_path_buf(), output.to_string(), pacing.to_string());
    let run = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args([
                "60",
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1280,330",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args([pacing.as_str(), output.as_str()])
            .arg(format!("http://{admin}/"))
            .output()
            .expect("chromium runs")
    });
    let out = run.await.unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rendered row of `address` (from `<tr data-endpoint=...>` to `</tr>`).
fn row(dom: &str, address: SocketAddr) -> &str {
    let start =
        dom.find(&format!("data-endpoint=\"{address}\"")).unwrap_or_else(|| panic!("no row for {address}"));
    &dom[start..start + dom[start..].find("</tr>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_endpoint_and_an_ejection_within_seconds() {
    let (a, b) = (Backend::named("a").await, Backend::named("b").await);
    let (a_addr, b_addr) = (a.addr, b.addr);
    let text = config(
        "round_robin",
        &[(a_addr, 1), (b_addr, 1)],
        "[upstreams.web.outlier_detection]\npreset = \"guide\"\n",
    );
    let proxy = proxy(&text).await;
    let (listen, admin) = (proxy.listen_addresses()[0], proxy.admin_address().unwrap());
    for _ in 0..40 {
        assert_eq!(get(listen, "/", &[]).await.0, 200);
    }
    let dir = tempfile::tempdir().unwrap();
    // Virtual time runs the page's polling at once; the DOM is read after its first renders.
    let pace = "--virtual-time-budget=5000";
    let dom = chromium(admin, &dir.path().join("one"), "--dump-dom", pace).await;
    assert!(dom.contains("data-upstream=\"web\""), "the upstream is shown:\n{dom}");
    for address in [a_addr, b_addr] {
        assert!(row(&dom, address).contains("status healthy"), "{}", row(&dom, address));
    }

    b.kill().await;
    let changed = Instant::now();
    // Round robin sends every other request to the dead endpoint; the guide's
    // passive check ejects it at the sixth failure in a row.
    for _ in 0..40 {
        assert_eq!(get(listen, "/", &[]).await.0, 200, "retried on the live endpoint");
    }
    let dom = chromium(admin, &dir.path().join("two"), "--dump-dom", pace).await;
    let dead = row(&dom, b_addr);
    assert!(dead.contains("status ejected") && dead.contains("outlier_detection"), "{dead}");
    assert!(row(&dom, a_addr).contains("status healthy"));
    let shown_after = changed.elapsed();
    assert!(shown_after < Duration::from_secs(15), "shown {shown_after:?} after the backend died");

    // And as a picture (docs/dashboard.png is one, of `lb-proxy demo` under wrk).
    let picture = dir.path().join("dashboard.png");
    chromium(admin, &dir.path().join("three"), &format!("--screenshot={}", picture.display()), pace).await;
    let png = std::fs::read(&picture).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real picture ({} bytes)",
        png.len()
    );
    proxy.shutdown().await;
    a.kill().await;
}
