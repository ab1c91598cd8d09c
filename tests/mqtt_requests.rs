//! Requests and answers against the whole bridge (the app's own builder,
//! `tests/support/bridge_rig.rs`) on the test broker: bridge requests on their response topic,
//! `config/get` with every secret the bridge runs on hidden, and MQTT 5's Response Topic and
//! Correlation Data, and the rig's time-of-day jobs off by default (`jobs/list`). The first two
//! run once with the bridge on MQTT 3.1.1 and once on MQTT 5.

#[macro_use]
mod support;

use marstek_bridge::domain::Mode;
use marstek_bridge::mqtt::MqttProtocol;
use marstek_bridge::scheduler::{JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT};
use support::TestPgDb;
use support::bridge_rig::TestBridge;
use support::mqtt_probe::{Msg5, Probe, Probe5, WAIT};

/// The password set in the configuration `config/get` answers with.
const SECRET: &str = "s3cret-pass";

for_both_protocols!(
    bridge_requests_are_answered_on_their_response_topic,
    config_get_answers_the_settings_with_every_secret_hidden,
);

async fn bridge_requests_are_answered_on_their_response_topic(protocol: MqttProtocol) {
    let b = TestBridge::builder("req").protocol(protocol).start().await;
    let mut rq = Probe::connect(&[b.t("bridge/response/#")]).await;
    rq.publish(
        &b.t("bridge/request/devices/list"),
        br#"{"transaction":"x1"}"#,
        false,
    )
    .await;
    let r = rq.wait("devices/list", WAIT, |_| true).await;
    assert_eq!(r.topic, b.t("bridge/response/devices/list"));
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["transaction"], "x1");
    assert_eq!(v["data"][0]["id"], "dev1");
    // The request's fields reach its handler (a production action: the schedule preview).
    rq.publish(
        &b.t("bridge/request/jobs/preview"),
        br#"{"trigger":"cron:0 6 * * *","count":1,"from":"2026-03-28T12:00:00Z"}"#,
        false,
    )
    .await;
    let v = rq.wait("preview", WAIT, |_| true).await.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["data"][0]["utc"], "2026-03-29T04:00:00Z", "{v}");
    assert_eq!(v["data"][0]["local"], "2026-03-29T06:00:00+02:00", "{v}");
    rq.publish(&b.t("bridge/request/nope"), br#"{"transaction":3}"#, false)
        .await;
    let v = rq.wait("nope", WAIT, |_| true).await.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["transaction"], 3);
    b.stop_and_clear().await;
}

async fn config_get_answers_the_settings_with_every_secret_hidden(protocol: MqttProtocol) {
    // The secrets are real settings the bridge runs on: the broker takes any credentials, the
    // test PostgreSQL any password.
    let db = TestPgDb::create("mbconfig").await;
    let mut url = url::Url::parse(&db.url).expect("test database URL");
    url.set_password(Some(SECRET)).expect("a URL with a host");
    let (with_secret, shown) = (url.to_string(), url.to_string().replace(SECRET, "***"));
    let b = TestBridge::builder("config")
        .protocol(protocol)
        .with(move |s| {
            s.mqtt.username = Some("bridge".into());
            s.mqtt.password = Some(SECRET.into());
            s.database.url = with_secret;
        })
        .start()
        .await;
    let mut rq = Probe::connect(&[b.t("bridge/response/#")]).await;
    rq.publish(&b.t("bridge/request/config/get"), b"{}", false)
        .await;
    let r = rq.wait("config", WAIT, |_| true).await;
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["data"]["mqtt"]["username"], "bridge");
    assert_eq!(v["data"]["mqtt"]["password"], "***");
    assert_eq!(v["data"]["database"]["url"], shown.as_str());
    assert!(shown.contains(":***@"), "{shown}");
    let text = String::from_utf8_lossy(&r.payload);
    assert!(!text.contains(SECRET), "a secret left the bridge: {text}");
    b.stop_and_clear().await;
}

#[tokio::test]
async fn mqtt5_answers_go_to_the_response_topic_with_the_correlation_data() {
    let b = TestBridge::builder("rr")
        .protocol(MqttProtocol::V5)
        .start()
        .await;
    let replies = format!("{}-replies", b.base);
    let (set, resp) = (b.t("dev1/set"), b.t("dev1/response"));
    let mut p = Probe5::connect(&[
        format!("{replies}/#"),
        resp.clone(),
        b.t("bridge/response/#"),
        set.clone(),
    ])
    .await;
    let is_reply =
        |topic: String, id: &'static str| move |m: &Msg5| m.topic == topic && m.json()["id"] == id;

    // A JSON command: answered on the requester's topic with its binary correlation data, and
    // on the documented topic as before.
    let corr: &[u8] = &[0, 1, 2, 0xff];
    let seen = p
        .ask(
            &set,
            br#"{"mode":"passive","power":-800,"duration":600,"id":"t1"}"#,
            &format!("{replies}/a"),
            Some(corr),
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation.as_deref(), Some(corr));
    assert!(!r.retain);
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["verified"], true);
    assert_eq!(b.mode(0), Mode::Passive);
    assert_eq!(b.snapshot(0).passive_power, -800);
    let documented = seen
        .iter()
        .any(|m| m.topic == resp && m.json()["id"] == "t1");
    if !documented {
        p.until("documented t1", is_reply(resp.clone(), "t1")).await;
    }

    // A plain field without correlation data; a refused command still answers there.
    let seen = p
        .ask(
            &b.t("dev1/set/passive_power"),
            b"-300",
            &format!("{replies}/b"),
            None,
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation, None);
    assert_eq!(r.json()["status"], "ok", "{:?}", r.json());
    assert_eq!(r.json()["applied"]["passive_power"], -300);
    let seen = p
        .ask(
            &set,
            br#"{"mode":"turbo","id":"bad"}"#,
            &format!("{replies}/a"),
            Some(b"c-bad"),
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation.as_deref(), Some(&b"c-bad"[..]));
    assert_eq!(r.json()["status"], "error");
    assert_eq!(
        b.mode(0),
        Mode::Passive,
        "the refused command changed nothing"
    );

    // A bridge request.
    let seen = p
        .ask(
            &b.t("bridge/request/devices/list"),
            br#"{"transaction":"x"}"#,
            &format!("{replies}/c"),
            Some(b"c3"),
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation.as_deref(), Some(&b"c3"[..]));
    assert_eq!(r.json()["transaction"], "x");
    assert_eq!(r.json()["data"][0]["id"], "dev1");

    // Bad response topics (the bridge's own command topic, an oversized one) are ignored: the
    // documented topic answers, nothing is sent there. Replies leave in order, so once the
    // reply to a later good request has arrived, a wrong one would have been seen.
    let long = format!("{replies}/{}", "x".repeat(300));
    p.request(&set, br#"{"mode":"auto","id":"loop"}"#, &set, Some(b"l"))
        .await;
    p.request(&set, br#"{"mode":"auto","id":"long"}"#, &long, Some(b"l"))
        .await;
    p.request(
        &set,
        br#"{"mode":"auto","id":"after"}"#,
        &format!("{replies}/d"),
        Some(b"d"),
    )
    .await;
    let mut all = p
        .until("reply after", is_reply(format!("{replies}/d"), "after"))
        .await;
    if !all.iter().any(is_reply(resp.clone(), "after")) {
        let mut rest = p
            .until("documented after", is_reply(resp.clone(), "after"))
            .await;
        all.append(&mut rest);
    }
    for id in ["loop", "long"] {
        assert!(
            all.iter().any(|m| m.topic == resp && m.json()["id"] == id),
            "no documented answer for {id}: {all:?}"
        );
    }
    assert!(
        !all.iter()
            .any(|m| (m.topic == set || m.topic == long) && m.json().get("status").is_some()),
        "an answer went to a bad response topic: {all:?}"
    );
    assert_eq!(b.mode(0), Mode::Auto);
    b.stop_and_clear().await;
}

/// The rig keeps the schedule's time-of-day jobs (AUTO 06:00, MANUAL 22:00) off, so that no test
/// depends on the time it runs at, unless a test opts in; `jobs/list` shows which.
#[tokio::test]
async fn the_rig_keeps_the_time_of_day_jobs_off_unless_asked() {
    for schedule in [false, true] {
        let mut bb = TestBridge::builder("jobs");
        if schedule {
            bb = bb.with_schedule();
        }
        let b = bb.start().await;
        let mut rq = Probe::connect(&[b.t("bridge/response/#")]).await;
        rq.publish(&b.t("bridge/request/jobs/list"), b"{}", false)
            .await;
        let v = rq.wait("jobs/list", WAIT, |_| true).await.json();
        assert_eq!(v["status"], "ok", "{v}");
        for id in [JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT] {
            let job = v["data"]
                .as_array()
                .and_then(|jobs| jobs.iter().find(|j| j["id"] == id))
                .unwrap_or_else(|| panic!("{id} not listed: {v}"));
            assert_eq!(job["enabled"], schedule, "{id}: {job}");
        }
        b.stop_and_clear().await;
    }
}
