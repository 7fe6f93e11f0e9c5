//! Who is listening on a TCP port, from `/proc`, best effort: the listening sockets'
//! inodes from `/proc/net/tcp` and `/proc/net/tcp6` (state `0A`), then the processes whose
//! `/proc/<pid>/fd/*` link to `socket:[<inode>]`. Processes of other users are not
//! readable without privileges; they are then left out, and the caller says less.
//!
//! Source: proc(5) (`/proc/net/tcp`, `/proc/<pid>/fd`, `/proc/<pid>/comm`).

use std::collections::HashSet;
use std::fs;

/// The `st` column of a listening socket in `/proc/net/tcp` (TCP_LISTEN).
const LISTEN: &str = "0A";

/// Inodes of the sockets listening on TCP port `port` (any address, IPv4 and IPv6).
pub(super) fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        inodes.extend(text.lines().skip(1).filter_map(|l| listener_inode(l, port)));
    }
    inodes
}

/// The inode of one `/proc/net/tcp{,6}` row if it is a socket listening on `port`:
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`, the local
/// address `HEXADDR:HEXPORT`.
fn listener_inode(line: &str, port: u16) -> Option<u64> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local_port = f.get(1)?.rsplit_once(':')?.1;
    if u16::from_str_radix(local_port, 16).ok()? != port || *f.get(3)? != LISTEN {
        return None;
    }
    f.get(9)?.parse().ok()
}

/// The processes (pid, name) holding one of `inodes` open, in pid order; those whose fds
/// this process may not read are missing.
pub(super) fn holders(inodes: &HashSet<u64>) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    if inodes.is_empty() {
        return found;
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue; // another user's process, or gone
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).ok().is_some_and(|target| {
                let t = target.to_string_lossy();
                t.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| inodes.contains(&n))
            })
        });
        if holds {
            let name = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            found.push((pid, name.trim_end().to_string()));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::listener_inode;

    #[test]
    fn reads_listening_rows_only() {
        let listen = "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listener_inode(listen, 8000), Some(123_456));
        assert_eq!(listener_inode(listen, 8001), None);
        let established = listen.replace(" 0A ", " 01 ");
        assert_eq!(listener_inode(&established, 8000), None);
        let v6 = "   1: 00000000000000000000000001000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 98765 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listener_inode(v6, 8001), Some(98_765));
    }
}
