//! The safety envelope every command passes, whatever its source: read-only mode, power limits
//! per device, depth-of-discharge and countdown bounds, slot numbers. Pure; no I/O.

use super::{Command, DeviceLimits, ModeConfig, Watts};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HhMm, ManualSlot, Percent, WeekMask};

    fn limits() -> DeviceLimits {
        DeviceLimits {
            max_charge_w: 2000,
            max_discharge_w: 800,
            min_soc: 11,
            max_soc: 100,
        }
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
