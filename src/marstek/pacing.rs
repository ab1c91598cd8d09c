//! Pacing of a device's routine polls: when the next status round starts. Pure time
//! arithmetic on tokio instants; the device actor calls it, nothing else is touched.

use std::time::Duration;

/// When the next routine round starts: `status_interval` is a period, start to start, so one
/// period after the round that was due at `due`; a round that overran its period delays the
/// next one (it starts at `now`, when the late round ended), and missed rounds are not made up.
pub(crate) fn next_round(
    due: tokio::time::Instant,
    period: Duration,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    (due + period).max(now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::next_round;

    #[test]
    fn the_status_interval_is_a_period_from_start_to_start() {
        let t0 = Instant::now();
        let period = Duration::from_secs(5);
        // a round that took 2 s: the next starts 5 s after this one started, not 5 s after it ended
        let next = next_round(t0, period, t0 + Duration::from_secs(2));
        assert_eq!(next, t0 + period);
        // a round that started late (a command was being served) keeps the cadence
        let next = next_round(t0, period, t0 + Duration::from_millis(10));
        assert_eq!(next - t0, period);
    }

    #[test]
    fn an_overrunning_round_delays_the_next_instead_of_piling_up() {
        let t0 = Instant::now();
        let period = Duration::from_secs(2);
        // a 7 s round (three periods and a half): one round follows at once, none is made up
        let ended = t0 + Duration::from_secs(7);
        let next = next_round(t0, period, ended);
        assert_eq!(next, ended);
        let after = next_round(next, period, next + Duration::from_millis(500));
        assert_eq!(after, ended + period, "then the period again from there");
    }
}
