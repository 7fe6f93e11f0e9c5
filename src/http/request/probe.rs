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

#[cfg(test)]
mod tests {
    use super::Probe;
    use crate::http::request::{parse_publish, Head, PubRequest};
    use crate::http::Status;

    /// The probes' paths, and the token: `/metrics` needs it, `/healthz` and `/readyz` not.
    #[test]
    fn probes_and_the_token() {
        let t = Some(&b"tok"[..]);
        for (path, probe) in [
            ("/metrics", Probe::Metrics),
            ("/healthz", Probe::Healthz),
            ("/readyz", Probe::Readyz),
        ] {
            assert_eq!(Probe::of_path(path.as_bytes()), Some(probe));
            let req =
                format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\r\n");
            let want = PubRequest::Probe {
                probe,
                close: false,
                head: true,
            };
            assert_eq!(
                parse_publish(req.as_bytes(), t),
                Head::Done(want, req.len())
            );
        }
        let bare = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            parse_publish(bare("/metrics").as_bytes(), t),
            Head::Refuse(Status::Unauthorized)
        );
        for p in ["/healthz", "/readyz"] {
            assert!(
                matches!(
                    parse_publish(bare(p).as_bytes(), t),
                    Head::Done(PubRequest::Probe { .. }, _)
                ),
                "{p}"
            );
        }
        assert_eq!(Probe::of_path(b"/metrics/"), None);
        let query = parse_publish(bare("/healthz?x").as_bytes(), None);
        assert!(matches!(
            query,
            Head::Done(
                PubRequest::Probe {
                    probe: Probe::Healthz,
                    ..
                },
                _
            )
        ));
    }
}
