//! The safety envelope every command passes, whatever its source: read-only mode, power limits
//! per device, depth-of-discharge and countdown bounds, slot numbers, and the SOC window
//! (`min_soc`..`max_soc`): no discharge asked at or below `min_soc`, no charge at or above
//! `max_soc`, checked when a command is submitted ([`check_soc`]) and while a Passive set-point
//! runs ([`soc_breach`]). Pure; no I/O.

use super::{Command, DeviceLimits, ModeConfig, Percent, Watts};

/// Largest Passive countdown accepted, s (24 h).
pub const MAX_PASSIVE_SECONDS: u32 = 86_400;
/// Smallest and largest depth of discharge the device accepts, %.
pub const DOD_RANGE: std::ops::RangeInclusive<u8> = 30..=88;
/// Highest Manual slot number (Venus A/C/D/E; E mini stops at 5).
pub const MAX_SLOT: u8 = 9;

/// Why a command was refused before reaching the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bridge is configured read-only.
    #[error("the bridge is in read-only mode (config read_only = true); no write is sent")]
    ReadOnly,
    /// A value outside its allowed range.
    #[error("{field}: {reason}")]
    OutOfRange {
        /// The offending field.
        field: &'static str,
        /// What is allowed.
        reason: String,
    },
    /// The battery's SOC is already at the limit the command would push it past.
    #[error("{0}")]
    SocLimit(String),
}

fn check_power(field: &'static str, power: Watts, limits: &DeviceLimits) -> Result<(), Rejection> {
    let p = power.0;
    if p < 0 && p.unsigned_abs() > limits.max_charge_w {
        return Err(Rejection::OutOfRange {
            field,
            reason: format!(
                "{p} W charges faster than this device's limit of {} W (negative = charge, allowed -{}..{})",
                limits.max_charge_w, limits.max_charge_w, limits.max_discharge_w
            ),
        });
    }
    if p > 0 && p as u32 > limits.max_discharge_w {
        return Err(Rejection::OutOfRange {
            field,
            reason: format!(
                "{p} W discharges faster than this device's limit of {} W (positive = discharge, allowed -{}..{})",
                limits.max_discharge_w, limits.max_charge_w, limits.max_discharge_w
            ),
        });
    }
    Ok(())
}

/// Checks a command against the read-only switch and one device's limits.
pub fn check_command(
    command: &Command,
    limits: &DeviceLimits,
    read_only: bool,
) -> Result<(), Rejection> {
    if read_only {
        return Err(Rejection::ReadOnly);
    }
    match command {
        Command::SetMode(ModeConfig::Passive { power, cd_time }) => {
            check_power("power", *power, limits)?;
            if *cd_time == 0 || *cd_time > MAX_PASSIVE_SECONDS {
                return Err(Rejection::OutOfRange {
                    field: "duration",
                    reason: format!("{cd_time} s is out of range (1 to {MAX_PASSIVE_SECONDS} s)"),
                });
            }
        }
        Command::SetMode(ModeConfig::Manual { slot }) => {
            check_power("power", slot.power, limits)?;
            if slot.slot > MAX_SLOT {
                return Err(Rejection::OutOfRange {
                    field: "slot",
                    reason: format!("slot {} does not exist (0 to {MAX_SLOT})", slot.slot),
                });
            }
        }
        Command::SetDod { value } => {
            if !DOD_RANGE.contains(&value.0) {
                return Err(Rejection::OutOfRange {
                    field: "dod",
                    reason: format!(
                        "{} % is out of range ({} to {} %)",
                        value.0,
                        DOD_RANGE.start(),
                        DOD_RANGE.end()
                    ),
                });
            }
        }
        Command::SetMode(_) | Command::SetLed { .. } | Command::SetBleAdv { .. } => {}
    }
    Ok(())
}

/// The power a command asks the battery to hold, W (negative = charge, positive = discharge):
/// the Passive set-point or an enabled Manual slot's power; `None` for modes the battery runs
/// on its own (Auto, AI, UPS: there its own DOD applies) and for settings.
pub fn requested_power(command: &Command) -> Option<Watts> {
    match command {
        Command::SetMode(ModeConfig::Passive { power, .. }) => Some(*power),
        Command::SetMode(ModeConfig::Manual { slot }) if slot.enable => Some(slot.power),
        _ => None,
    }
}

/// Why `power` at `soc` leaves the SOC window of `limits`, if it does: discharging at or below
/// `min_soc`, or charging at or above `max_soc`.
pub fn soc_breach(limits: &DeviceLimits, power: Watts, soc: Percent) -> Option<String> {
    if power.0 > 0 && soc.0 <= limits.min_soc {
        return Some(format!(
            "discharging at {} W with SOC {} %, at or below min_soc {} %",
            power.0, soc.0, limits.min_soc
        ));
    }
    if power.0 < 0 && soc.0 >= limits.max_soc {
        return Some(format!(
            "charging at {} W with SOC {} %, at or above max_soc {} %",
            power.0, soc.0, limits.max_soc
        ));
    }
    None
}

/// Checks a command against the SOC window, given the battery's latest SOC (`None` = not read
/// yet: the command passes, and the running check stops it at the first sample if needed).
pub fn check_soc(
    command: &Command,
    limits: &DeviceLimits,
    soc: Option<Percent>,
) -> Result<(), Rejection> {
    match (requested_power(command), soc) {
        (Some(power), Some(soc)) => {
            soc_breach(limits, power, soc).map_or(Ok(()), |why| Err(Rejection::SocLimit(why)))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HhMm, ManualSlot, Percent, WeekMask};

    fn limits() -> DeviceLimits {
        DeviceLimits {
            max_charge_w: 2000,
            max_discharge_w: 800,
            min_soc: 30,
            max_soc: 90,
        }
    }

    fn passive(power: i32) -> Command {
        Command::SetMode(ModeConfig::Passive {
            power: Watts(power),
            cd_time: 600,
        })
    }

    #[test]
    fn soc_window_refuses_discharge_at_min_and_charge_at_max() {
        let l = limits();
        // The three reproductions of the finding: discharge at 20 % with min_soc 30, charge at
        // 95 % with max_soc 90, a Manual discharge slot at 20 %.
        assert!(matches!(
            check_soc(&passive(500), &l, Some(Percent(20))),
            Err(Rejection::SocLimit(_))
        ));
        assert!(check_soc(&passive(-500), &l, Some(Percent(95))).is_err());
        let slot = ManualSlot {
            slot: 0,
            start: HhMm::new(0, 0).unwrap(),
            end: HhMm::new(23, 59).unwrap(),
            days: WeekMask::ALL,
            power: Watts(500),
            enable: true,
        };
        let manual = Command::SetMode(ModeConfig::Manual { slot });
        assert!(check_soc(&manual, &l, Some(Percent(20))).is_err());
        let disabled = Command::SetMode(ModeConfig::Manual {
            slot: ManualSlot {
                enable: false,
                ..slot
            },
        });
        assert!(check_soc(&disabled, &l, Some(Percent(20))).is_ok());
        // The other direction, the edges, and what the battery runs on its own.
        assert!(check_soc(&passive(-500), &l, Some(Percent(20))).is_ok());
        assert!(check_soc(&passive(500), &l, Some(Percent(95))).is_ok());
        assert!(check_soc(&passive(500), &l, Some(Percent(30))).is_err());
        assert!(check_soc(&passive(500), &l, Some(Percent(31))).is_ok());
        assert!(check_soc(&passive(-500), &l, Some(Percent(90))).is_err());
        assert!(check_soc(&passive(0), &l, Some(Percent(20))).is_ok());
        assert!(check_soc(&Command::SetMode(ModeConfig::Auto), &l, Some(Percent(5))).is_ok());
        assert!(check_soc(&passive(500), &l, None).is_ok());
    }

    #[test]
    fn passive_power_is_bounded_by_sign() {
        let ok = Command::SetMode(ModeConfig::Passive {
            power: Watts(-2000),
            cd_time: 60,
        });
        assert!(check_command(&ok, &limits(), false).is_ok());
        let too_much_charge = Command::SetMode(ModeConfig::Passive {
            power: Watts(-2001),
            cd_time: 60,
        });
        assert!(matches!(
            check_command(&too_much_charge, &limits(), false),
            Err(Rejection::OutOfRange { field: "power", .. })
        ));
        let too_much_discharge = Command::SetMode(ModeConfig::Passive {
            power: Watts(801),
            cd_time: 60,
        });
        assert!(check_command(&too_much_discharge, &limits(), false).is_err());
        let zero_duration = Command::SetMode(ModeConfig::Passive {
            power: Watts(0),
            cd_time: 0,
        });
        assert!(check_command(&zero_duration, &limits(), false).is_err());
    }

    #[test]
    fn read_only_refuses_everything() {
        assert_eq!(
            check_command(&Command::SetMode(ModeConfig::Auto), &limits(), true),
            Err(Rejection::ReadOnly)
        );
    }

    #[test]
    fn dod_and_slot_bounds() {
        assert!(check_command(&Command::SetDod { value: Percent(29) }, &limits(), false).is_err());
        assert!(check_command(&Command::SetDod { value: Percent(88) }, &limits(), false).is_ok());
        let slot = ManualSlot {
            slot: 10,
            start: HhMm::new(22, 0).unwrap(),
            end: HhMm::new(6, 0).unwrap(),
            days: WeekMask::ALL,
            power: Watts(-500),
            enable: true,
        };
        assert!(
            check_command(
                &Command::SetMode(ModeConfig::Manual { slot }),
                &limits(),
                false
            )
            .is_err()
        );
    }
}
