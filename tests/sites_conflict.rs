//! Two bridges claiming one `site_id` from different instances with different batteries, seen
//! where both write (the central database): each forwarder raises `site_id_conflict` naming the
//! other (instance, host, batteries), `fleet status` shows the site as `conflict` with the
//! instances, and a second instance of the same site with the same batteries (a standby) is no
//! conflict. Once the claims agree again the alert is cleared.

mod support;

use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::domain::{Alert, AlertKind, AlertState};
use marstek_bridge::sites::central::CentralSettings;
use marstek_bridge::sites::fleet;
use marstek_bridge::sites::forward::{Forwarder, prepare};
use marstek_bridge::store::central::Claim;
use marstek_bridge::store::{DatabaseSettings, SqliteStore, Store};
use support::TestPgDb;
use tokio::sync::mpsc;

/// An edge's forwarder claiming `site` as `instance` on `host` with `devices`, and its alerts.
struct Edge {
    _dir: tempfile::TempDir,
    forwarder: Forwarder,
    alerts: mpsc::UnboundedReceiver<Alert>,
}

async fn edge(
    central: &CentralSettings,
    site: &str,
    instance: &str,
    host: &str,
    devices: &[&str],
) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("edge.db").display());
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(&DatabaseSettings {
            url: url.clone(),
            site_id: site.into(),
            forward: true,
            ..DatabaseSettings::default()
        })
        .await
        .unwrap(),
    );
    let (tx, alerts) = mpsc::unbounded_channel();
    let me = Claim {
        instance: instance.into(),
        host: host.into(),
        devices: devices.iter().map(|d| d.to_string()).collect(),
    };
    let (forwarder, _) = prepare(central, site, &url, store).await.unwrap();
    Edge {
        _dir: dir,
        forwarder: forwarder.with_identity(me, Some(tx)),
        alerts,
    }
}

impl Edge {
    /// One forwarding round; the `site_id_conflict` alerts it raised or cleared.
    async fn round(&mut self) -> Vec<Alert> {
        self.forwarder.round().await.expect("round");
        let mut out = Vec::new();
        while let Ok(a) = self.alerts.try_recv() {
            assert_eq!(a.kind, AlertKind::SiteIdConflict, "{a:?}");
            out.push(a);
        }
        out
    }
}

fn settings(url: &str) -> CentralSettings {
    CentralSettings {
        url: url.into(),
        batch_size: 100,
        timeout: Duration::from_secs(5),
        offline_after: Duration::from_secs(3600),
        ..CentralSettings::default()
    }
}

#[tokio::test]
async fn two_bridges_claiming_one_site_with_different_batteries_are_a_conflict() {
    let db = TestPgDb::create("sites_conflict").await;
    let s = settings(&db.url);
    let mut leader = edge(&s, "shared", "edge-a", "host-a", &["bat0", "bat1"]).await;
    let mut standby = edge(&s, "shared", "edge-a2", "host-a2", &["bat0", "bat1"]).await;
    let mut other_site = edge(&s, "elsewhere", "edge-x", "host-x", &["bat9"]).await;
    // A leader and its standby (same batteries), and another site: no conflict.
    assert!(leader.round().await.is_empty());
    assert!(standby.round().await.is_empty());
    assert!(other_site.round().await.is_empty());
    assert!(leader.round().await.is_empty());
    let view = fleet::status(&s).await.unwrap();
    assert!(view.iter().all(|v| v.conflict.is_empty()), "{view:?}");

    // A bridge of another house, configured with the same site id.
    let mut intruder = edge(&s, "shared", "edge-b", "host-b", &["bat7"]).await;
    let raised = intruder.round().await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].state, AlertState::Raised);
    let msg = &raised[0].message;
    assert!(
        msg.contains("edge-a on host-a with [bat0, bat1]") && msg.contains("edge-a2"),
        "{msg}"
    );
    let raised = leader.round().await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].state, AlertState::Raised);
    assert!(
        raised[0].message.contains("edge-b on host-b with [bat7]"),
        "{}",
        raised[0].message
    );
    assert!(
        leader.round().await.is_empty(),
        "raised once, not every round"
    );
    assert!(
        other_site.round().await.is_empty(),
        "another site is not concerned"
    );

    let view = fleet::status(&s).await.unwrap();
    let shared = view.iter().find(|v| v.site_id == "shared").unwrap();
    assert_eq!(shared.conflict, ["edge-a", "edge-a2", "edge-b"]);
    let elsewhere = view.iter().find(|v| v.site_id == "elsewhere").unwrap();
    assert!(elsewhere.conflict.is_empty());
    let json = fleet::json(&view);
    assert_eq!(
        json["sites"][1]["conflict"],
        serde_json::json!(["edge-a", "edge-a2", "edge-b"]),
        "{json}"
    );
    let table = fleet::table(&view, chrono::Utc::now());
    let line = table.lines().find(|l| l.starts_with("shared")).unwrap();
    assert!(line.contains("conflict"), "{table}");
    assert!(
        table.contains("site_id_conflict: shared is claimed with different batteries by edge-a, edge-a2, edge-b"),
        "{table}"
    );

    // The second bridge turns out to be a spare of the same batteries: the conflict ends.
    let mut fixed = edge(&s, "shared", "edge-b", "host-b", &["bat0", "bat1"]).await;
    assert!(fixed.round().await.is_empty(), "it never raised one");
    let cleared = leader.round().await;
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(cleared[0].state, AlertState::Cleared);
    let view = fleet::status(&s).await.unwrap();
    assert!(view.iter().all(|v| v.conflict.is_empty()), "{view:?}");
    db.drop_now().await;
}
