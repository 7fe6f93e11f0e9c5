//! The operations endpoints a request may name (`/metrics`, `/healthz`, `/readyz`), on the
//! publish listener and on `--metrics-listen`; their replies are made by [`crate::metrics`].

/// An operations endpoint of the publish listener (and of `--metrics-listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET /metrics`: Prometheus text exposition; needs the bearer token when one is set.
    Metrics,
    /// `GET /healthz`: liveness; open to all (a load balancer has no token).
    Healthz,
    /// `GET /readyz`: readiness; open to all.
    Readyz,
}

impl Probe {
    /// The probe served at `path`, if any.
    pub fn of_path(path: &[u8]) -> Option<Probe> {
        match path {
            b"/metrics" => Some(Probe::Metrics),
            b"/healthz" => Some(Probe::Healthz),
            b"/readyz" => Some(Probe::Readyz),
            _ => None,
        }
    }
}
