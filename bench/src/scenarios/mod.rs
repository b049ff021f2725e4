//! The scenarios, each measured next to its baseline in the same run.

pub mod api;
pub mod batch;
pub mod convergence;
pub mod drain;
pub mod drain_sizes;
pub mod events;
pub mod memory;
pub mod naive;
pub mod peer_convergence;
pub mod peer_drain;

use std::time::Duration;

/// How big and long a run is.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    /// Fixed rates at which P50/P99/P99.9 are compared.
    pub fixed_rates: Vec<f64>,
    /// Length of one fixed-rate run.
    pub step: Duration,
    /// The search for the max sustainable rate starts here and doubles.
    pub search_start: f64,
    /// Each step of the search multiplies the rate by this.
    pub search_factor: f64,
    pub search_max: f64,
    /// Bisection steps after the search's climb.
    pub search_refine: usize,
    /// Keep-alive connections of the HTTP load generator. Each holds one
    /// request in flight, so they cap any server near connections ÷
    /// latency (Little's law): 64 connections held every ~6 ms durable
    /// write near 10,700/s whatever its CPU could do. Enough for 40,000/s at
    /// 6 ms quick, more in full runs.
    pub connections: usize,
    /// Items (Zipf ranked) and users (uniform).
    pub items: u64,
    pub users: i64,
    pub zipf_exponent: f64,
    /// Events pre-filled for the projector drain.
    pub drain_events: u64,
}

impl Config {
    /// The rate search of this configuration under a P99 bound.
    pub fn plan(&self, p99_limit_ms: f64) -> crate::http::Plan {
        crate::http::Plan {
            start: self.search_start,
            factor: self.search_factor,
            max: self.search_max,
            refine: self.search_refine,
            p99_limit_ms,
        }
    }

    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                fixed_rates: vec![2000.0],
                step: Duration::from_secs(3),
                search_start: 1000.0,
                search_factor: 2.0,
                search_max: 32_000.0,
                search_refine: 0,
                connections: 256,
                items: 10_000,
                users: 1_000_000,
                zipf_exponent: 1.0,
                drain_events: 100_000,
            }
        } else {
            Self {
                quick,
                fixed_rates: vec![1000.0, 5000.0, 10_000.0],
                step: Duration::from_secs(10),
                search_start: 2000.0,
                search_factor: 1.5,
                search_max: 256_000.0,
                search_refine: 2,
                connections: 512,
                items: 1_000_000,
                users: 10_000_000,
                zipf_exponent: 1.0,
                drain_events: 5_000_000,
            }
        }
    }
}
