//! Alert rules with raise/clear hysteresis, fed by samples and driver health.
