//! One MQTT client API over rumqttc's two protocol implementations: MQTT 3.1.1 (`rumqttc`'s v4
//! `AsyncClient`/`EventLoop`) and MQTT 5 (`rumqttc::v5`). Both are built from the same
//! [`ClientOptions`] (client id, keep-alive, clean session, packet limits, last will,
//! credentials, TLS, TCP_NODELAY, 5 s connection timeout); the event loop yields bridge-level
//! [`ClientEvent`]s and errors as text, with a refused ConnAck spelled out with its reason code.
//! This is the only module that names rumqttc types; it touches the broker and, when building
//! options, the password and TLS files. It knows nothing of topics or payload meanings.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5 as r5;
use rumqttc::v5::mqttbytes::v5 as p5;

use super::settings::{MqttProtocol, MqttSettings, TlsSettings};

/// Largest MQTT packet sent, bytes; with MQTT 5 also the largest accepted, announced to the
/// broker in CONNECT (Maximum Packet Size, MQTT 5.0 §3.1.2.11.4), so the broker never delivers
/// a larger one (it drops it for this client instead of letting it break the connection).
pub const MAX_PACKET_SIZE: u32 = 1 << 20;
/// Largest MQTT 3.1.1 packet read, bytes. 3.1.1 cannot tell the broker a limit and rumqttc
/// drops the connection on a larger packet, so this is generous (a bigger message is still
/// refused by `max_payload`, without losing the connection); the shipped mosquitto.conf caps
/// packets below it (`max_packet_size`).
pub const MAX_INCOMING_PACKET_SIZE_V311: usize = 8 << 20;
/// Time allowed for the TCP (and TLS) connection and the ConnAck, seconds.
pub const CONNECT_TIMEOUT_SECS: u64 = 5;

/// Why a client could not be built, a request could not be queued, or the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A password or TLS file could not be read.
    #[error("cannot read {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// The broker answered the CONNECT with a refusal (credentials, authorisation, …).
    #[error("broker refused the connection: {0}")]
    Refused(String),
    /// The connection failed or was lost (I/O, TLS, timeout, protocol error), as text.
    #[error("{0}")]
    Connection(String),
    /// The broker delivered a packet over the client's limit (the connection is lost).
    #[error(
        "the broker delivered a {bytes}-byte packet, over the {limit}-byte limit: cap packets on the broker (mosquitto `max_packet_size`) or use protocol = \"5\""
    )]
    TooLarge {
        /// Size the broker announced, bytes.
        bytes: usize,
        /// The client's limit, bytes.
        limit: usize,
    },
    /// The request could not be queued (invalid topic, or the event loop is gone).
    #[error("mqtt request not sent: {0}")]
    Request(String),
}

/// The last will: published by the broker when the connection drops without a DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic of the will.
    pub topic: String,
    /// Payload of the will.
    pub payload: Vec<u8>,
    /// QoS 0, 1 or 2 (larger values are taken as 1).
    pub qos: u8,
    /// Whether the broker keeps it as the retained message of the topic.
    pub retain: bool,
}

/// Everything needed to connect, identical for both protocol versions.
#[derive(Clone)]
pub struct ClientOptions {
    /// MQTT version to speak.
    pub protocol: MqttProtocol,
    /// Client identifier (unique per broker).
    pub client_id: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Keep-alive interval (at least 5 s is used: rumqttc's v5 client refuses less).
    pub keep_alive: Duration,
    /// Clean session (3.1.1) / clean start (5).
    pub clean_session: bool,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS files; `None` = plain TCP.
    pub tls: Option<TlsSettings>,
    /// Last will.
    pub last_will: Option<Will>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("keep_alive", &self.keep_alive)
            .field("clean_session", &self.clean_session)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls)
            .field("last_will", &self.last_will)
            .finish()
    }
}

impl ClientOptions {
    /// Options from the `[mqtt]` section (reads `password_file`); no last will.
    pub fn from_settings(s: &MqttSettings) -> Result<Self, ClientError> {
        let credentials = match &s.username {
            Some(user) => {
                let pw = s.resolve_password().map_err(|e| ClientError::File {
                    path: s
                        .password_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    error: e.to_string(),
                })?;
                Some((user.clone(), pw.unwrap_or_default()))
            }
            None => None,
        };
        Ok(Self {
            protocol: s.protocol,
            client_id: s.client_id.clone(),
            host: s.host.clone(),
            port: s.port,
            keep_alive: s.keep_alive,
            clean_session: true,
            credentials,
            tls: s.tls.clone(),
            last_will: None,
        })
    }
}

/// A publish received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingPublish {
    /// Topic it was published on.
    pub topic: String,
    /// Payload, as sent.
    pub payload: Bytes,
    /// Retain flag (true for a retained message replayed at subscription).
    pub retain: bool,
    /// MQTT 5 Response Topic property (always `None` in 3.1.1).
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data property (always `None` in 3.1.1).
    pub correlation_data: Option<Bytes>,
}

/// What the event loop reports, whatever the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The broker accepted the connection (ConnAck success).
    Connected,
    /// A subscription was acknowledged (failures are logged by the adapter).
    Subscribed,
    /// A publish arrived.
    Publish(IncomingPublish),
    /// Our DISCONNECT went out.
    Disconnecting,
    /// Anything else (acks, pings, outgoing packets).
    Other,
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        2 => rumqttc::QoS::ExactlyOnce,
        _ => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5(q: u8) -> r5::mqttbytes::QoS {
    match q {
        0 => r5::mqttbytes::QoS::AtMostOnce,
        2 => r5::mqttbytes::QoS::ExactlyOnce,
        _ => r5::mqttbytes::QoS::AtLeastOnce,
    }
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(p).map_err(|e| ClientError::File {
        path: p.display().to_string(),
        error: e.to_string(),
    })
}

fn transport(tls: &TlsSettings) -> Result<rumqttc::Transport, ClientError> {
    let ca = match &tls.ca {
        Some(p) => read_file(p)?,
        None => Vec::new(),
    };
    let client_auth = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => Some((read_file(c)?, read_file(k)?)),
        _ => None,
    };
    Ok(if ca.is_empty() && client_auth.is_none() {
        rumqttc::Transport::tls_with_default_config()
    } else {
        rumqttc::Transport::tls(ca, client_auth, None)
    })
}

/// Sends requests to the broker; cheap to clone. Requests are queued for the event loop, which
/// must be polled for anything to happen.
#[derive(Clone)]
pub struct MqttClient {
    inner: ClientInner,
}

#[derive(Clone)]
enum ClientInner {
    V4(rumqttc::AsyncClient),
    V5(r5::AsyncClient),
}

/// Drives the connection: connects, reconnects on the next `poll` after an error, and yields
/// events. Exactly one task should poll it.
pub struct MqttEventLoop {
    inner: LoopInner,
}

enum LoopInner {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<r5::EventLoop>),
}

impl MqttClient {
    /// Builds a client and its event loop (nothing connects until the loop is polled);
    /// `capacity` bounds the queue of requests waiting for the event loop.
    pub fn new(
        o: &ClientOptions,
        capacity: usize,
    ) -> Result<(MqttClient, MqttEventLoop), ClientError> {
        let transport = o.tls.as_ref().map(transport).transpose()?;
        // rumqttc panics on a keep-alive below 5 s (v5) and on a persistent session without id.
        let keep_alive = o.keep_alive.max(Duration::from_secs(5));
        let clean = o.clean_session || o.client_id.is_empty();
        let (client, eventloop) = match o.protocol {
            MqttProtocol::V311 => {
                let mut m = rumqttc::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
                m.set_keep_alive(keep_alive);
                m.set_clean_session(clean);
                m.set_max_packet_size(MAX_INCOMING_PACKET_SIZE_V311, MAX_PACKET_SIZE as usize);
                if let Some(w) = &o.last_will {
                    m.set_last_will(rumqttc::LastWill::new(
                        w.topic.clone(),
                        w.payload.clone(),
                        qos4(w.qos),
                        w.retain,
                    ));
                }
                if let Some((u, p)) = &o.credentials {
                    m.set_credentials(u.clone(), p.clone());
                }
                if let Some(t) = transport {
                    m.set_transport(t);
                }
                let (client, mut el) = rumqttc::AsyncClient::new(m, capacity);
                let mut net = el.network_options();
                // Small command/response messages must not wait for Nagle + delayed ACK (~40 ms).
                net.set_tcp_nodelay(true);
                net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
                el.set_network_options(net);
                (ClientInner::V4(client), LoopInner::V4(Box::new(el)))
            }
            MqttProtocol::V5 => {
                let mut m = r5::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
                m.set_keep_alive(keep_alive);
                m.set_clean_start(clean);
                m.set_max_packet_size(Some(MAX_PACKET_SIZE));
                m.set_connection_timeout(CONNECT_TIMEOUT_SECS);
                if let Some(w) = &o.last_will {
                    m.set_last_will(p5::LastWill::new(
                        w.topic.clone(),
                        w.payload.clone(),
                        qos5(w.qos),
                        w.retain,
                        None,
                    ));
                }
                if let Some((u, p)) = &o.credentials {
                    m.set_credentials(u.clone(), p.clone());
                }
                if let Some(t) = transport {
                    m.set_transport(t);
                }
                let mut net = m.network_options();
                net.set_tcp_nodelay(true);
                net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
                m.set_network_options(net);
                let (client, el) = r5::AsyncClient::new(m, capacity);
                (ClientInner::V5(client), LoopInner::V5(Box::new(el)))
            }
        };
        Ok((
            MqttClient { inner: client },
            MqttEventLoop { inner: eventloop },
        ))
    }

    /// The protocol this client speaks.
    pub fn protocol(&self) -> MqttProtocol {
        match self.inner {
            ClientInner::V4(_) => MqttProtocol::V311,
            ClientInner::V5(_) => MqttProtocol::V5,
        }
    }

    /// Queues a publish (QoS 0, 1 or 2; larger is taken as 1).
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: u8,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), ClientError> {
        self.publish_correlated(topic, qos, retain, payload, None)
            .await
    }

    /// Queues a publish carrying MQTT 5 Correlation Data (an answer on a requester's Response
    /// Topic); in 3.1.1 the correlation data is dropped.
    pub async fn publish_correlated(
        &self,
        topic: impl Into<String>,
        qos: u8,
        retain: bool,
        payload: impl Into<Vec<u8>>,
        correlation_data: Option<Bytes>,
    ) -> Result<(), ClientError> {
        let (topic, payload) = (topic.into(), payload.into());
        match &self.inner {
            ClientInner::V4(c) => c
                .publish(topic, qos4(qos), retain, payload)
                .await
                .map_err(|e| ClientError::Request(e.to_string())),
            ClientInner::V5(c) => {
                let r = match correlation_data {
                    Some(data) => {
                        let props = p5::PublishProperties {
                            correlation_data: Some(data),
                            ..Default::default()
                        };
                        c.publish_with_properties(topic, qos5(qos), retain, payload, props)
                            .await
                    }
                    None => c.publish(topic, qos5(qos), retain, payload).await,
                };
                r.map_err(|e| ClientError::Request(e.to_string()))
            }
        }
    }

    /// Queues a subscription to `filter` with maximum QoS `qos`. In MQTT 5 the subscription
    /// asks for Retain As Published (MQTT 5.0 §3.8.3.1), so a retained message published while
    /// we are subscribed arrives with its retain flag set; MQTT 3.1.1 clears the flag on live
    /// deliveries (§3.3.1.3), so there only the replay at subscription time carries it.
    pub async fn subscribe(&self, filter: impl Into<String>, qos: u8) -> Result<(), ClientError> {
        let filter = filter.into();
        match &self.inner {
            ClientInner::V4(c) => c
                .subscribe(filter, qos4(qos))
                .await
                .map_err(|e| ClientError::Request(e.to_string())),
            ClientInner::V5(c) => {
                let mut f = p5::Filter::new(filter, qos5(qos));
                f.preserve_retain = true;
                c.subscribe_many([f])
                    .await
                    .map_err(|e| ClientError::Request(e.to_string()))
            }
        }
    }

    /// Queues a DISCONNECT (the broker then discards the last will).
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        match &self.inner {
            ClientInner::V4(c) => c
                .disconnect()
                .await
                .map_err(|e| ClientError::Request(e.to_string())),
            ClientInner::V5(c) => c
                .disconnect()
                .await
                .map_err(|e| ClientError::Request(e.to_string())),
        }
    }
}

impl MqttEventLoop {
    /// Next event; connects first when not connected. After an error the next call reconnects
    /// (callers should wait a little first).
    pub async fn poll(&mut self) -> Result<ClientEvent, ClientError> {
        match &mut self.inner {
            LoopInner::V4(el) => el.poll().await.map(event4).map_err(error4),
            LoopInner::V5(el) => el.poll().await.map(event5).map_err(error5),
        }
    }
}

fn event4(ev: rumqttc::Event) -> ClientEvent {
    use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
    match ev {
        Event::Incoming(Packet::ConnAck(_)) => ClientEvent::Connected,
        Event::Incoming(Packet::Publish(p)) => ClientEvent::Publish(IncomingPublish {
            topic: p.topic,
            payload: p.payload,
            retain: p.retain,
            response_topic: None,
            correlation_data: None,
        }),
        Event::Incoming(Packet::SubAck(s)) => {
            if s.return_codes.contains(&SubscribeReasonCode::Failure) {
                tracing::warn!(pkid = s.pkid, "mqtt_subscription_refused");
            }
            ClientEvent::Subscribed
        }
        Event::Outgoing(Outgoing::Disconnect) => ClientEvent::Disconnecting,
        _ => ClientEvent::Other,
    }
}

fn event5(ev: r5::Event) -> ClientEvent {
    use p5::{Packet, SubscribeReasonCode};
    match ev {
        r5::Event::Incoming(Packet::ConnAck(_)) => ClientEvent::Connected,
        r5::Event::Incoming(Packet::Publish(p)) => {
            let Ok(topic) = String::from_utf8(p.topic.to_vec()) else {
                tracing::warn!("mqtt_publish_topic_not_utf8");
                return ClientEvent::Other;
            };
            let (response_topic, correlation_data) = match p.properties {
                Some(props) => (props.response_topic, props.correlation_data),
                None => (None, None),
            };
            ClientEvent::Publish(IncomingPublish {
                topic,
                payload: p.payload,
                retain: p.retain,
                response_topic,
                correlation_data,
            })
        }
        r5::Event::Incoming(Packet::SubAck(s)) => {
            let refused: Vec<String> = s
                .return_codes
                .iter()
                .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                .map(|c| format!("{c:?}"))
                .collect();
            if !refused.is_empty() {
                tracing::warn!(pkid = s.pkid, reasons = ?refused, "mqtt_subscription_refused");
            }
            ClientEvent::Subscribed
        }
        r5::Event::Outgoing(rumqttc::Outgoing::Disconnect) => ClientEvent::Disconnecting,
        _ => ClientEvent::Other,
    }
}

fn error4(e: rumqttc::ConnectionError) -> ClientError {
    use rumqttc::ConnectReturnCode as C;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            let (n, what) = match code {
                C::Success => (0, "success"),
                C::RefusedProtocolVersion => (1, "unacceptable protocol version"),
                C::BadClientId => (2, "client identifier rejected"),
                C::ServiceUnavailable => (3, "server unavailable"),
                C::BadUserNamePassword => (4, "bad user name or password"),
                C::NotAuthorized => (5, "not authorised"),
            };
            ClientError::Refused(format!("{what} (MQTT 3.1.1 return code {n})"))
        }
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(bytes),
        )) => ClientError::TooLarge {
            bytes,
            limit: MAX_INCOMING_PACKET_SIZE_V311,
        },
        other => ClientError::Connection(other.to_string()),
    }
}

/// Reason code number and meaning of an MQTT 5 ConnAck refusal (MQTT 5.0 §3.2.2.2).
fn connack_reason5(code: p5::ConnectReturnCode) -> (u8, &'static str) {
    use p5::ConnectReturnCode as C;
    match code {
        C::Success => (0x00, "success"),
        C::RefusedProtocolVersion => (0x84, "unsupported protocol version"),
        C::BadClientId => (0x85, "client identifier not valid"),
        C::ServiceUnavailable => (0x88, "server unavailable"),
        C::UnspecifiedError => (0x80, "unspecified error"),
        C::MalformedPacket => (0x81, "malformed packet"),
        C::ProtocolError => (0x82, "protocol error"),
        C::ImplementationSpecificError => (0x83, "implementation specific error"),
        C::UnsupportedProtocolVersion => (0x84, "unsupported protocol version"),
        C::ClientIdentifierNotValid => (0x85, "client identifier not valid"),
        C::BadUserNamePassword => (0x86, "bad user name or password"),
        C::NotAuthorized => (0x87, "not authorised"),
        C::ServerUnavailable => (0x88, "server unavailable"),
        C::ServerBusy => (0x89, "server busy"),
        C::Banned => (0x8A, "banned"),
        C::BadAuthenticationMethod => (0x8C, "bad authentication method"),
        C::TopicNameInvalid => (0x90, "topic name invalid"),
        C::PacketTooLarge => (0x95, "packet too large"),
        C::QuotaExceeded => (0x97, "quota exceeded"),
        C::PayloadFormatInvalid => (0x99, "payload format invalid"),
        C::RetainNotSupported => (0x9A, "retain not supported"),
        C::QoSNotSupported => (0x9B, "QoS not supported"),
        C::UseAnotherServer => (0x9C, "use another server"),
        C::ServerMoved => (0x9D, "server moved"),
        C::ConnectionRateExceeded => (0x9F, "connection rate exceeded"),
    }
}

fn error5(e: r5::ConnectionError) -> ClientError {
    match e {
        r5::ConnectionError::ConnectionRefused(code) => {
            let (n, what) = connack_reason5(code);
            ClientError::Refused(format!("{what} (MQTT 5 reason code 0x{n:02X})"))
        }
        r5::ConnectionError::MqttState(r5::StateError::Deserialization(
            r5::mqttbytes::Error::PayloadSizeLimitExceeded { pkt_size, max },
        )) => ClientError::TooLarge {
            bytes: pkt_size,
            limit: max as usize,
        },
        other => ClientError::Connection(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(protocol: MqttProtocol) -> ClientOptions {
        ClientOptions {
            protocol,
            client_id: String::new(),
            host: "127.0.0.1".into(),
            port: 1,
            keep_alive: Duration::from_secs(1),
            clean_session: false,
            credentials: Some(("u".into(), "secret".into())),
            tls: None,
            last_will: Some(Will {
                topic: "t/state".into(),
                payload: b"offline".to_vec(),
                qos: 7,
                retain: true,
            }),
        }
    }

    #[test]
    fn options_that_rumqttc_would_panic_on_are_adjusted() {
        // Empty id without clean session, keep-alive below 5 s, QoS out of range.
        for p in [MqttProtocol::V311, MqttProtocol::V5] {
            let (c, _el) = MqttClient::new(&opts(p), 4).unwrap();
            assert_eq!(c.protocol(), p);
        }
        assert!(!format!("{:?}", opts(MqttProtocol::V5)).contains("secret"));
    }

    #[test]
    fn refusals_name_the_reason_code() {
        let e = error5(r5::ConnectionError::ConnectionRefused(
            p5::ConnectReturnCode::BadUserNamePassword,
        ));
        assert_eq!(
            e.to_string(),
            "broker refused the connection: bad user name or password (MQTT 5 reason code 0x86)"
        );
        let e = error4(rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::NotAuthorized,
        ));
        assert!(
            e.to_string()
                .contains("not authorised (MQTT 3.1.1 return code 5)")
        );
    }

    #[test]
    fn missing_tls_file_is_named() {
        let mut o = opts(MqttProtocol::V5);
        o.tls = Some(TlsSettings {
            ca: Some("does/not/exist.pem".into()),
            ..Default::default()
        });
        match MqttClient::new(&o, 4) {
            Err(ClientError::File { path, .. }) => assert!(path.contains("exist.pem")),
            _ => panic!("expected a file error"),
        }
    }

    #[tokio::test]
    async fn connection_refused_is_text_and_invalid_topics_are_errors() {
        for p in [MqttProtocol::V311, MqttProtocol::V5] {
            let (c, mut el) = MqttClient::new(&opts(p), 4).unwrap();
            assert!(matches!(
                c.publish("a/#", 1, false, "x").await,
                Err(ClientError::Request(_))
            ));
            let e = el.poll().await.unwrap_err();
            assert!(matches!(e, ClientError::Connection(_)), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}
