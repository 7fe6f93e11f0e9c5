//! Admin: the `serve` flags of the admin features ([`AdminArgs`]) and the per-address
//! connection table of `--max-conns-per-ip` ([`per_ip`]). The kick (`DELETE
//! /subscribers/<id>`) is a publish-listener request (`http::request`) carried out by every
//! shard (`shard::kick`); the limit's accept and close hooks are in `shard::per_ip`.

use clap::Args;

pub mod per_ip;

/// Admin flags of `uring-comet serve`, flattened into [`crate::config::ServeArgs`] and
/// carried as they are in [`crate::config::ServerConfig::admin`]. Each doc line is its
/// `--help`.
#[derive(Args, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminArgs {
    /// Most subscriber connections one source address may hold at once, all shards together;
    /// one more gets `429 Too Many Requests` (`Retry-After: 10`) and is closed. 0: no limit.
    /// Costs a counter per active address and, while on, 4 bytes per connection.
    #[arg(long, default_value_t = 0)]
    pub max_conns_per_ip: u32,
}
