//! A faithful simulated Marstek battery fleet on UDP, with switchable firmware faults, for tests,
//! demos and benchmarks. Depends only on `domain` and the protocol types of `marstek`.
