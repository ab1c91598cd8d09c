//! The switchable faults of one simulated device and their `--faults` syntax: transport faults
//! (loss, duplicates, late replies, id wrap, listen-port-only…) and behavioural faults, where the
//! firmware acknowledges a command and then does not carry it out, or undoes it (user reports
//! collected in the reference's `firmware-quirks-2026.md`). Pure data and parsing, plus the
//! reply copies and delays the timing faults ask for; the server applies the rest.

use std::time::Duration;

/// A periodic network-stack restart: silent for `silence` at the end of every `period`
/// (firmware 150 without cloud access: 900 s on Wi-Fi, 1800 s on Ethernet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetReset {
    /// Time between two restarts (simulated clock).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// How long each restart leaves the device silent.
    #[serde(with = "humantime_serde")]
    pub silence: Duration,
}

/// Switchable faults of one device; all off by default.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SimFaults {
    /// Drop the first request after this much idle time (Wi-Fi power save).
    pub drop_first_after_idle: Option<Duration>,
    /// Drop requests arriving within this time after the last reply.
    pub drop_within_quiet_gap: Option<Duration>,
    /// Drop requests arriving within this time after the previous request (concurrency).
    pub drop_concurrent: Option<Duration>,
    /// Send every reply twice.
    pub duplicate_replies: bool,
    /// Delay every reply by this much (beyond the client's timeout).
    pub late_replies: Option<Duration>,
    /// Answer nothing.
    pub silent: bool,
    /// Send truncated, invalid JSON instead of replies.
    pub malformed_json: bool,
    /// Open API switched off in the app: nothing answers until re-enabled.
    pub api_disabled: bool,
    /// Only answer requests sent from the listen port number.
    pub reply_only_to_listen_port: bool,
    /// Echo ids truncated to 16 bits.
    pub id_wrap_16: bool,
    /// An empty datagram freezes the API until the simulator restarts.
    pub freeze_on_empty: bool,
    /// Omit `ble_mac`/`wifi_mac` from `Marstek.GetDevice` (HMG-50 quirk).
    pub omit_macs: bool,
    /// Send `mode` as an integer code.
    pub integer_mode: bool,
    /// Drop this fraction (0.0–1.0) of requests at random (lossy Wi-Fi).
    pub loss: Option<f64>,
    /// Delay every reply by a random time up to this much (uniform), on top of `late_replies`.
    pub jitter: Option<Duration>,
    /// `ES.SetMode` and `DOD.SET` answer `set_result: true` and change nothing.
    pub ignore_writes: bool,
    /// A Passive or Manual command is carried out, then the device falls back to Auto after
    /// this long (simulated clock; jaapp #72, #145).
    pub revert_after: Option<Duration>,
    /// Answering `ES.GetMode` switches a Manual or Passive battery back to Auto (fw 148,
    /// jaapp #111); the answer itself still shows the mode before the switch.
    pub getmode_resets: bool,
    /// `ES.GetMode` answers only `params.id` 1 (0 stays silent) and reports the mode as an
    /// integer 0–4 (taurgis PR #54).
    pub getmode_id1_only: bool,
    /// After an accepted write, further writes answer `set_result: false` for this long
    /// (Venus A fw 148, jaapp PR #129; simulated clock).
    pub busy: Option<Duration>,
    /// Periodic network-stack restarts (fw 150 without cloud access).
    pub net_reset: Option<NetReset>,
    /// Venus A fw 148 reply shapes: no `bat_power`, `pv_power` and load totals 0, energy in
    /// plain Wh, PV1 in deciwatts next to PV2–4 in watts (jaapp PR #129).
    pub no_bat_power: bool,
    /// Venus Mini fw 300: a Manual slot's `power` is silently stored as 0 and Passive is
    /// refused with `set_result: false` (jaapp #140).
    pub ignore_manual_power: bool,
}

const NAMES: &str = "drop-first, quiet-gap, concurrency, duplicate, late, silent, malformed, \
api-disabled, listen-port-only, id-wrap, freeze-on-empty, omit-macs, integer-mode, loss[=0.3], \
jitter[=500ms], ignore-writes, revert-after=DUR, getmode-resets, getmode-id1-only, busy[=10s], \
net-reset[=PERIOD[/SILENCE]] (900s/5s), no-bat-power, ignore-manual-power";

fn duration(fault: &str, v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("fault '{fault}': '{v}' is not a duration like 30s or 5m"))
}

fn net_reset(fault: &str, v: Option<&str>) -> Result<NetReset, String> {
    let (period, silence) = match v {
        None => (Duration::from_secs(900), Duration::from_secs(5)),
        Some(v) => match v.split_once('/') {
            Some((p, s)) => (duration(fault, p)?, duration(fault, s)?),
            None => (duration(fault, v)?, Duration::from_secs(5)),
        },
    };
    if silence >= period {
        return Err(format!(
            "fault '{fault}': the silence must be shorter than the period"
        ));
    }
    Ok(NetReset { period, silence })
}

impl SimFaults {
    /// Parses a comma-separated list of fault names, some with `=VALUE` (see [`NAMES`]);
    /// the error names the fault that does not parse.
    pub fn parse_list(s: &str) -> Result<Self, String> {
        let mut f = SimFaults::default();
        for item in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            let flag = |on: &mut bool| match value {
                None => {
                    *on = true;
                    Ok(())
                }
                Some(_) => Err(format!("fault '{item}': {name} takes no value")),
            };
            match name {
                "drop-first" => f.drop_first_after_idle = Some(Duration::from_secs(5)),
                "quiet-gap" => f.drop_within_quiet_gap = Some(Duration::from_secs(1)),
                "concurrency" => f.drop_concurrent = Some(Duration::from_millis(100)),
                "late" => f.late_replies = Some(Duration::from_secs(3)),
                "duplicate" => flag(&mut f.duplicate_replies)?,
                "silent" => flag(&mut f.silent)?,
                "malformed" => flag(&mut f.malformed_json)?,
                "api-disabled" => flag(&mut f.api_disabled)?,
                "listen-port-only" => flag(&mut f.reply_only_to_listen_port)?,
                "id-wrap" => flag(&mut f.id_wrap_16)?,
                "freeze-on-empty" => flag(&mut f.freeze_on_empty)?,
                "omit-macs" => flag(&mut f.omit_macs)?,
                "integer-mode" => flag(&mut f.integer_mode)?,
                "ignore-writes" => flag(&mut f.ignore_writes)?,
                "getmode-resets" => flag(&mut f.getmode_resets)?,
                "getmode-id1-only" => flag(&mut f.getmode_id1_only)?,
                "no-bat-power" => flag(&mut f.no_bat_power)?,
                "ignore-manual-power" => flag(&mut f.ignore_manual_power)?,
                "loss" => {
                    let v = match value {
                        None => 0.3,
                        Some(v) => v
                            .parse::<f64>()
                            .ok()
                            .filter(|v| (0.0..=1.0).contains(v))
                            .ok_or_else(|| {
                                format!("fault '{item}': loss must be a fraction 0.0 to 1.0")
                            })?,
                    };
                    f.loss = Some(v);
                }
                "jitter" => {
                    f.jitter = Some(match value {
                        None => Duration::from_millis(500),
                        Some(v) => humantime::parse_duration(v).map_err(|e| {
                            format!("fault '{item}': jitter must be a duration like 500ms ({e})")
                        })?,
                    })
                }
                "revert-after" => {
                    let v = value.ok_or_else(|| {
                        format!(
                            "fault '{item}': revert-after needs a duration, e.g. revert-after=5m"
                        )
                    })?;
                    f.revert_after = Some(duration(item, v)?);
                }
                "busy" => {
                    f.busy = Some(match value {
                        None => Duration::from_secs(10),
                        Some(v) => duration(item, v)?,
                    })
                }
                "net-reset" => f.net_reset = Some(net_reset(item, value)?),
                _ => return Err(format!("unknown fault '{item}' (known: {NAMES})")),
            }
        }
        Ok(f)
    }
}

impl SimFaults {
    /// The reply bytes once (twice with `duplicate_replies`), each with its late/jitter delay.
    pub(crate) fn delayed_copies(&self, out: &[u8]) -> Vec<(Vec<u8>, Option<Duration>)> {
        let faults = self;
        let copies = if faults.duplicate_replies { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let jitter = faults
                    .jitter
                    .filter(|j| !j.is_zero())
                    .map(|j| j.mul_f64(rand::random::<f64>()));
                let delay = match (faults.late_replies, jitter) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                (out.to_vec(), delay)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_jitter_parse_with_defaults_and_values() {
        let f = SimFaults::parse_list("loss,jitter").unwrap();
        assert_eq!(f.loss, Some(0.3));
        assert_eq!(f.jitter, Some(Duration::from_millis(500)));
        let f = SimFaults::parse_list("loss=0.5, jitter=2s").unwrap();
        assert_eq!(f.loss, Some(0.5));
        assert_eq!(f.jitter, Some(Duration::from_secs(2)));
        assert!(SimFaults::parse_list("loss=1.5").is_err());
        assert!(SimFaults::parse_list("loss=x").is_err());
        assert!(SimFaults::parse_list("jitter=soon").is_err());
    }

    #[test]
    fn behavioural_faults_parse_with_their_values() {
        let f = SimFaults::parse_list(
            "ignore-writes, revert-after=5m, getmode-resets, getmode-id1-only, busy=8s, \
             net-reset=30m/20s, no-bat-power, ignore-manual-power",
        )
        .unwrap();
        assert!(f.ignore_writes && f.getmode_resets && f.getmode_id1_only);
        assert!(f.no_bat_power && f.ignore_manual_power);
        assert_eq!(f.revert_after, Some(Duration::from_secs(300)));
        assert_eq!(f.busy, Some(Duration::from_secs(8)));
        assert_eq!(
            f.net_reset,
            Some(NetReset {
                period: Duration::from_secs(1800),
                silence: Duration::from_secs(20)
            })
        );
        let d = SimFaults::parse_list("busy,net-reset").unwrap();
        assert_eq!(d.busy, Some(Duration::from_secs(10)));
        assert_eq!(
            d.net_reset.map(|n| (n.period, n.silence)),
            Some((Duration::from_secs(900), Duration::from_secs(5)))
        );
        assert_eq!(SimFaults::parse_list("").unwrap(), SimFaults::default());
    }

    #[test]
    fn a_bad_fault_is_named_in_the_error() {
        for (list, named) in [
            ("ignore-writes,turbo", "'turbo'"),
            ("revert-after", "'revert-after'"),
            ("revert-after=soon", "'revert-after=soon'"),
            ("busy=0s", "'busy=0s'"),
            ("net-reset=10s/20s", "'net-reset=10s/20s'"),
            ("ignore-writes=1", "'ignore-writes=1'"),
        ] {
            let e = SimFaults::parse_list(list).unwrap_err();
            assert!(e.contains(named), "{list}: {e}");
        }
    }
}
