//! The status round of a battery actor: which methods a round reads, decoding each answer into
//! the round's data, building and publishing the sample, and the reachability it implies. Where
//! the firmware catalogue reads `ES.GetMode` sparingly and the bridge's last accepted write put
//! the battery in Manual or Passive, `ES.GetMode` is not asked at all (answering it reverts the
//! battery to Auto on fw 148, jaapp #111): the mode is inferred from the power read instead
//! (`domain::infer_mode`). Touches the actor's state and, through it, the shared transport.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Actor, Job, lock};
use crate::domain::{DriverError, ModeConfig, PowerTolerance, Sample, infer_mode};
use crate::marstek::profile::{Profile, RoundData, build_sample};
use crate::marstek::protocol::{self, decode_result, method};
use crate::marstek::readings::reading_units;

impl Actor {
    /// One full status read; updates health and publishes the sample.
    pub(super) async fn poll_round(
        &mut self,
        extras: bool,
        mut rx: Option<&mut mpsc::Receiver<Job>>,
    ) -> Result<Sample, DriverError> {
        let r = self.read_round(extras, &mut rx).await;
        self.record_round(r.is_ok());
        match &r {
            Ok(s) => {
                if s.soc.is_some() {
                    *lock(&self.shared.soc) = s.soc;
                }
                let _ = self.samples.send(s.clone());
            }
            Err(e) => {
                self.readings.failed(true, &e.to_string());
                tracing::warn!(device = %self.spec.id, error = %e, "poll_failed");
            }
        }
        r
    }

    /// Reads the round's methods one by one (serving queued jobs in between) into a sample.
    async fn read_round(
        &mut self,
        extras: bool,
        rx: &mut Option<&mut mpsc::Receiver<Job>>,
    ) -> Result<Sample, DriverError> {
        let profile = self.profile().await?;
        let mut data = RoundData::default();
        let mut last_err = None;
        let plan = self.round_plan(&profile, extras);
        let mode_left_out = !plan.contains(&method::ES_GET_MODE);
        for m in plan {
            self.serve_pending(rx).await;
            let reply = match if m == method::ES_GET_MODE {
                self.get_mode().await
            } else {
                self.call(m, protocol::instance_params(0), false).await
            } {
                Ok(r) => r,
                Err(e @ DriverError::Timeout { .. }) | Err(e @ DriverError::Io(_)) => {
                    // reads were already retried: the device is silent, stop this round
                    last_err = Some(e);
                    break;
                }
                Err(e) => {
                    tracing::debug!(device = %self.spec.id, method = m, error = %e, "read_skipped");
                    if !matches!(e, DriverError::Unsupported { .. }) {
                        self.readings.failed(false, &format!("{m}: {e}"));
                    }
                    last_err = Some(e);
                    continue;
                }
            };
            self.store_reply(m, &reply.result, &mut data);
        }
        if data.is_empty() {
            return Err(last_err.unwrap_or_else(|| DriverError::Decode("empty poll round".into())));
        }
        self.readings.carry_extras(&mut data);
        let mut sample = build_sample(&profile, self.spec.id.clone(), Utc::now(), &data);
        if let Some(written) = self.unsafe_write() {
            // ES.GetMode would undo the write: the mode is what the power shows
            sample.mode = infer_mode(
                written,
                &self.spec.limits,
                sample.soc.map(|p| p.0),
                sample.bat_power.map(|w| w.0),
                &PowerTolerance::DEFAULT,
            );
            if sample.mode.is_some() {
                self.last_mode = sample.mode;
            }
        } else if mode_left_out {
            // ES.GetMode left out of this round (read sparingly): the mode last read stands
            sample.mode = self.last_mode;
        } else if sample.mode.is_some() {
            self.last_mode = sample.mode;
        }
        let info = lock(&self.shared.info).clone();
        self.readings.finish(info.as_ref(), &mut sample);
        Ok(sample)
    }

    /// Whether the firmware catalogue says to read `ES.GetMode` sparingly on this device.
    pub(super) fn get_mode_sparingly(&self) -> bool {
        lock(&self.shared.info)
            .as_ref()
            .and_then(|i| i.firmware_note.as_ref())
            .is_some_and(|n| n.policy.get_mode_sparingly)
    }

    /// The accepted write `ES.GetMode` must not be asked under: on a device that reads it
    /// sparingly, the last mode write when it put the battery in Manual, or in Passive and its
    /// countdown (`cd_time`) is still running. None when asking is harmless.
    pub(super) fn unsafe_write(&self) -> Option<&ModeConfig> {
        let (config, at) = self.written.as_ref()?;
        let running = match config {
            ModeConfig::Manual { .. } => true,
            ModeConfig::Passive { cd_time, .. } => {
                at.elapsed() < Duration::from_secs(u64::from(*cd_time))
            }
            _ => false,
        };
        (running && self.get_mode_sparingly()).then_some(config)
    }

    /// The methods a round reads, in order: status always, the mode too unless the firmware
    /// catalogue says to read it sparingly (then only on extras rounds and immediate polls, and
    /// never while the bridge's own Manual or Passive write stands: background `ES.GetMode`
    /// polling resets the mode on fw 148, jaapp #111), the fragile or costly reads (per the
    /// readings table) only on extras rounds, after the status.
    fn round_plan(&self, profile: &Profile, extras: bool) -> Vec<&'static str> {
        let mut plan: Vec<&'static str> = Vec::with_capacity(6);
        if profile.has_es_status() {
            plan.push(method::ES_STATUS);
        }
        let sparingly = self.get_mode_sparingly();
        let may_ask = self.unsafe_write().is_none() || !profile.has_es_status();
        if may_ask && (extras || !sparingly || !profile.has_es_status()) {
            plan.push(method::ES_GET_MODE);
        }
        let units = reading_units(profile);
        let battery_now = !units.battery_read_fragile || extras;
        if self.settings.read_battery && battery_now {
            plan.push(method::BAT_STATUS);
        }
        if profile.has_pv() {
            plan.push(method::PV_STATUS);
        }
        if extras {
            if profile.has_em() {
                plan.push(method::EM_STATUS);
            }
            plan.push(method::WIFI_STATUS);
            plan.push(method::BLE_STATUS);
        }
        plan
    }

    /// Decodes the answer to `m` into its slot of `data`; an undecodable one counts as an error.
    fn store_reply(&self, m: &str, res: &Value, data: &mut RoundData) {
        let (shared, id) = (&self.shared, &self.spec.id);
        let bad = |e: String| {
            lock(&shared.health).errors += 1;
            tracing::debug!(device = %id, method = m, error = %e, "read_undecodable");
        };
        match m {
            method::ES_STATUS => decode_result(res)
                .map(|v| data.es = Some(v))
                .unwrap_or_else(bad),
            method::ES_GET_MODE => decode_result(res)
                .map(|v| data.mode = Some(v))
                .unwrap_or_else(bad),
            method::BAT_STATUS => decode_result(res)
                .map(|v| data.bat = Some(v))
                .unwrap_or_else(bad),
            method::PV_STATUS => decode_result(res)
                .map(|v| data.pv = Some(v))
                .unwrap_or_else(bad),
            method::EM_STATUS => decode_result(res)
                .map(|v| data.em = Some(v))
                .unwrap_or_else(bad),
            method::WIFI_STATUS => decode_result(res)
                .map(|v| data.wifi = Some(v))
                .unwrap_or_else(bad),
            method::BLE_STATUS => decode_result(res)
                .map(|v| data.ble = Some(v))
                .unwrap_or_else(bad),
            _ => {}
        }
    }

    /// The longest silence the catalogue takes for a network reset on this device, if any.
    fn reset_blackout(&self) -> Option<Duration> {
        lock(&self.shared.info)
            .as_ref()
            .and_then(|i| i.firmware_note.as_ref())
            .and_then(|n| n.policy.reset_blackout())
    }

    /// Whether a failed round falls in a known network reset: the device has been silent for
    /// no longer than the catalogue's bound (then the failure is not counted yet). Tracks the
    /// silence either way; once it outlasts the bound, every failed round of it counts.
    fn in_reset_blackout(&mut self, ok: bool) -> bool {
        if ok {
            self.silence = None;
            return false;
        }
        let (since, rounds) = self.silence.get_or_insert((Instant::now(), 0));
        *rounds += 1;
        let (since, rounds) = (*since, *rounds);
        let bound = self
            .reset_blackout()
            .filter(|_| self.settings.network_reset_blackout);
        match bound {
            Some(bound) if since.elapsed() <= bound => {
                tracing::info!(device = %self.spec.id, silent_ms = since.elapsed().as_millis() as u64, bound_s = bound.as_secs(), "network_reset_blackout");
                true
            }
            Some(_) => {
                let mut h = lock(&self.shared.health);
                h.consecutive_failures = h.consecutive_failures.max(rounds.saturating_sub(1));
                false
            }
            None => false,
        }
    }

    /// Updates the failure count and, on a change, reachability (and the availability watch).
    fn record_round(&mut self, ok: bool) {
        if self.in_reset_blackout(ok) {
            return;
        }
        let limit = self.settings.failures_before_unreachable.max(1);
        let mut h = lock(&self.shared.health);
        let change = if ok {
            h.consecutive_failures = 0;
            (!h.reachable).then_some(true)
        } else {
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            (h.reachable && h.consecutive_failures >= limit).then_some(false)
        };
        if let Some(now) = change {
            h.reachable = now;
            drop(h);
            if now {
                tracing::info!(device = %self.spec.id, "device_reachable");
            } else {
                // re-learn identity (firmware may have changed) when it comes back
                self.identify = true;
                if let Some(addr) = self.target.addr {
                    self.transport.forget_unsupported(addr);
                }
                // A battery known by name may have moved: resolve it again.
                if self.target.name.is_some() {
                    self.target.addr = None;
                }
                tracing::warn!(device = %self.spec.id, "device_unreachable");
            }
            self.shared.available.send_replace(now);
        }
    }
}
