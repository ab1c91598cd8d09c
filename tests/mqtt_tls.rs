//! TLS to the broker for real: a private CA and a broker certificate made with the `openssl`
//! command, a mosquitto of our own with a TLS listener on a free loopback port, and the bridge
//! connecting with `[mqtt.tls]` — server verification only, then mutual TLS with a client
//! certificate the broker requires.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use marstek_bridge::control::{CommandService, Fleet, Presence};
use marstek_bridge::mqtt::{MqttBridge, MqttSettings, RequestRouter, TlsSettings};
use support::PrivateBroker;
use tokio_util::sync::CancellationToken;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by the
/// CA. Both leaf certificates carry an extension, so they are X.509 v3 (rustls refuses v1).
fn make_pki(dir: &Path) {
    let run = |cmd: &str| openssl(dir, &cmd.split_whitespace().collect::<Vec<_>>());
    run(
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=marstek-test-ca",
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "localhost"), ("client", "marstek-bridge")] {
        run(&format!(
            "req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={cn}"
        ));
        run(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
        ));
    }
}

fn start_broker(dir: &Path, require_client_cert: bool) -> (PrivateBroker, u16) {
    let p = |f: &str| dir.join(f).display().to_string();
    let broker = PrivateBroker::start(
        dir,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_client_cert}\nallow_anonymous true",
            p("ca.pem"),
            p("server.pem"),
            p("server.key")
        ),
    );
    let port = broker.port;
    (broker, port)
}

async fn connects(port: u16, tls: TlsSettings) -> bool {
    let settings = MqttSettings {
        host: "localhost".into(),
        port,
        client_id: format!("mbtls{port}"),
        base_topic: format!("mbtls{port}"),
        tls: Some(tls),
        ..MqttSettings::default()
    };
    let cancel = CancellationToken::new();
    let commands = CommandService::new(Fleet::default(), None, None, false);
    let presence = Presence::fixed([]);
    let (handle, task) = MqttBridge::start(
        settings,
        commands,
        &presence,
        RequestRouter::new(),
        cancel.clone(),
    )
    .unwrap();
    let mut connected = handle.connected();
    let ok = tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c))
        .await
        .is_ok();
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    ok
}

fn path(dir: &Path, f: &str) -> Option<PathBuf> {
    Some(dir.join(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_connects_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());

    let (_broker, port) = start_broker(dir.path(), false);
    assert!(
        connects(
            port,
            TlsSettings {
                ca: path(dir.path(), "ca.pem"),
                cert: None,
                key: None
            }
        )
        .await,
        "TLS with the private CA"
    );

    let (_mtls, port) = start_broker(dir.path(), true);
    assert!(
        connects(
            port,
            TlsSettings {
                ca: path(dir.path(), "ca.pem"),
                cert: path(dir.path(), "client.pem"),
                key: path(dir.path(), "client.key")
            }
        )
        .await,
        "mutual TLS with a client certificate"
    );
}
