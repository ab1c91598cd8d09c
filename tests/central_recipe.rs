//! The shipped central broker recipe for real: `mosquitto/central/mosquitto.conf` and its ACL
//! (ports and file paths substituted, certificates made with the `openssl` command) and a site
//! mosquitto bridged into it over TLS by `mosquitto/site-bridge.conf` with its TLS and login
//! lines switched on. The site's tree arrives under `sites/<site_id>/`, the operator's command
//! reaches the site under `central/`, and a site cannot publish into another site's subtree.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{PrivateBroker, free_port};
use tokio::sync::mpsc;

const CENTRAL_CONF: &str = include_str!("../mosquitto/central/mosquitto.conf");
const SITE_RECIPE: &str = include_str!("../mosquitto/site-bridge.conf");
const WAIT: Duration = Duration::from_secs(20);

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1/localhost, as the certs README makes them.
fn certificates(dir: &Path) {
    run(
        dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test central CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    run(
        dir,
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// The central mosquitto on (tls, plain) loopback ports; killed on drop.
struct Central(std::process::Child);

impl Drop for Central {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn central(dir: &Path, tls: u16, plain: u16) -> Central {
    let d = dir.display();
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto/central/acl");
    assert!(
        CENTRAL_CONF.contains("listener 8883\n")
            && CENTRAL_CONF.contains("listener 1883 127.0.0.1")
    );
    let conf = CENTRAL_CONF
        .replace("listener 8883\n", &format!("listener {tls} 127.0.0.1\n"))
        .replace(
            "listener 1883 127.0.0.1",
            &format!("listener {plain} 127.0.0.1"),
        )
        .replace("/mosquitto/data/passwd", &format!("{d}/passwd"))
        .replace("persistence true", "persistence false")
        .replace("/mosquitto/config/acl", &acl.display().to_string())
        .replace("/mosquitto/certs/", &format!("{d}/"));
    let path = dir.join("central.conf");
    std::fs::write(&path, format!("user root\n{conf}")).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed");
    let end = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", plain)).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "central mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Central(child)
}

/// A client on `port` as `user`, subscribed to `filter`; every publish it sees.
async fn client(
    port: u16,
    id: &str,
    login: Option<(&str, &str)>,
    filter: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<(String, String)>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    let (c, mut events) = AsyncClient::new(opts, 100);
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (acked_tx, mut acked) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let text = String::from_utf8_lossy(&p.payload).into_owned();
                    if tx.send((p.topic, text)).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = acked_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(WAIT, acked.recv())
        .await
        .expect("suback");
    (c, rx)
}

/// The next message on `topic` within the wait, if any.
async fn next_on(
    rx: &mut mpsc::UnboundedReceiver<(String, String)>,
    topic: &str,
) -> Option<String> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some((t, text))) if t == topic => return Some(text),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_bridges_into_the_shipped_central_broker_over_tls_and_stays_in_its_subtree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let passwd = d.join("passwd").display().to_string();
    run(
        d,
        "mosquitto_passwd",
        &["-c", "-b", &passwd, "operator", "op-secret"],
    );
    run(
        d,
        "mosquitto_passwd",
        &["-b", &passwd, "site-a", "a-secret"],
    );
    let (tls, plain) = (free_port(), free_port());
    let _central = central(d, tls, plain);

    // The operator watches every site, on the central broker's local listener.
    let (op, mut seen) = client(plain, "op", Some(("operator", "op-secret")), "sites/#").await;

    // Site A's broker: the shipped recipe, TLS and login lines on (no client certificate).
    let ca = d.join("ca.crt").display().to_string();
    let recipe = SITE_RECIPE
        .replace("SITE_ID", "site-a")
        .replace("central.example.org:8883", &format!("127.0.0.1:{tls}"))
        .replace(
            "#bridge_cafile /mosquitto/config/central-ca.crt",
            &format!("bridge_cafile {ca}"),
        )
        .replace("#bridge_tls_version tlsv1.3", "bridge_tls_version tlsv1.2")
        .replace("#bridge_insecure false", "bridge_insecure false")
        .replace("#remote_username site-a", "remote_username site-a")
        .replace("#remote_password change-me", "remote_password a-secret");
    assert!(
        recipe.contains(&format!("bridge_cafile {ca}"))
            && recipe.contains("remote_username site-a")
    );
    let site = PrivateBroker::start(d, &format!("allow_anonymous true\n{recipe}"));
    assert_eq!(
        next_on(&mut seen, "sites/site-a/connection")
            .await
            .as_deref(),
        Some("1"),
        "the site link never came up over TLS"
    );

    // The site's tree arrives under sites/site-a/.
    let (local, mut at_site) = client(site.port, "bridge-a", None, "central/#").await;
    local
        .publish(
            "marstek/bat0/state",
            QoS::AtLeastOnce,
            true,
            r#"{"soc":50}"#,
        )
        .await
        .unwrap();
    assert_eq!(
        next_on(&mut seen, "sites/site-a/marstek/bat0/state")
            .await
            .as_deref(),
        Some(r#"{"soc":50}"#)
    );
    // A command sent centrally reaches the site under central/.
    op.publish(
        "sites/site-a/marstek/bat0/set",
        QoS::AtLeastOnce,
        false,
        r#"{"mode":"auto"}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        next_on(&mut at_site, "central/marstek/bat0/set")
            .await
            .as_deref(),
        Some(r#"{"mode":"auto"}"#)
    );

    // Site A's login cannot write into site B's subtree (the ACL drops it), but can into its own.
    let (intruder, _) = client(
        plain,
        "intruder",
        Some(("site-a", "a-secret")),
        "sites/site-a/x",
    )
    .await;
    intruder
        .publish(
            "sites/site-b/marstek/bat0/state",
            QoS::AtLeastOnce,
            true,
            "forged",
        )
        .await
        .unwrap();
    intruder
        .publish("sites/site-a/marker", QoS::AtLeastOnce, false, "after")
        .await
        .unwrap();
    let mut forged = false;
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(end, seen.recv()).await {
            Ok(Some((t, _))) if t == "sites/site-a/marker" => break,
            Ok(Some((t, _))) if t.starts_with("sites/site-b/") => forged = true,
            Ok(Some(_)) => continue,
            _ => panic!("the marker published after the forgery never arrived"),
        }
    }
    assert!(!forged, "a site wrote into another site's subtree");
}
