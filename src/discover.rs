//! Local servers found by themselves (DESIGN §2): a cheap TCP probe of the usual loopback
//! ports, remembered for a short while in the cache dir. A refused connection on loopback
//! answers at once, so a machine with nothing running pays well under a millisecond; a
//! port that accepts but does not answer HTTP within `PROBE_BUDGET` is skipped and
//! remembered like a closed one. Whether an open port really is an OpenAI-compatible
//! server is settled by its `/models`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::providers::{Provider, Tier};

/// Ollama, llama.cpp's server, LM Studio, vLLM.
pub const DEFAULT_PORTS: &[u16] = &[11434, 8080, 1234, 8000];
/// How long a probe's result is reused.
pub const CACHE_MS: u64 = 30_000;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(150);

/// The provider name for a port: the usual server's name, else `local-PORT`.
pub fn name_for(port: u16) -> String {
    match port {
        11434 => "ollama".into(),
        8080 => "llamacpp".into(),
        1234 => "lmstudio".into(),
        8000 => "vllm".into(),
        p => format!("local-{p}"),
    }
}

/// How long a whole probe may take: a loopback server that is there answers in
/// milliseconds, so a port that accepts a connection but says nothing by then is skipped
/// (and remembered as such) rather than costing every run a catalog timeout.
pub const PROBE_BUDGET: Duration = Duration::from_millis(300);

#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    checked_ms: u64,
    ports: Vec<u16>,
    open: Vec<u16>,
    /// Ports that accepted a connection but sent no HTTP reply within the budget.
    #[serde(default)]
    slow: Vec<u16>,
}

/// What a probe found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Ports where an HTTP server answered `GET /v1/models`.
    pub open: Vec<u16>,
    /// Ports that accepted a connection and then said nothing within `PROBE_BUDGET`.
    pub slow: Vec<u16>,
    /// Taken from the cache (`CACHE_MS`), not probed now.
    pub cached: bool,
}

/// What one port is.
enum PortState {
    Closed,
    Answers,
    Silent,
}

/// Connects and asks `GET /v1/models`; an HTTP status line back within the budget is a
/// server worth a catalog fetch.
async fn probe(port: u16, deadline: tokio::time::Instant) -> PortState {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr));
    let Ok(Ok(mut sock)) = connect.await else {
        return PortState::Closed;
    };
    let answered = tokio::time::timeout_at(deadline, async {
        let ask = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        sock.write_all(ask).await.ok()?;
        let mut head = [0u8; 5];
        sock.read_exact(&mut head).await.ok()?;
        (&head == b"HTTP/").then_some(())
    })
    .await;
    match answered {
        Ok(Some(())) => PortState::Answers,
        _ => PortState::Silent,
    }
}

/// The ports among `ports` where a server answers, from a fresh cache or a probe bounded
/// by `PROBE_BUDGET` in all.
pub async fn open_ports(ports: &[u16], cache_dir: Option<&Path>, now_ms: u64) -> Found {
    let path = cache_dir.map(|d| d.join("discovery.json"));
    if let Some(p) = &path
        && let Some(probe) = std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Probe>(&b).ok())
        && probe.ports == ports
        && now_ms.saturating_sub(probe.checked_ms) < CACHE_MS
    {
        return Found {
            open: probe.open,
            slow: probe.slow,
            cached: true,
        };
    }
    let deadline = tokio::time::Instant::now() + PROBE_BUDGET;
    let checks = ports
        .iter()
        .map(|&port| async move { (port, probe(port, deadline).await) });
    let mut found = Found::default();
    for (port, state) in futures_util::future::join_all(checks).await {
        match state {
            PortState::Answers => found.open.push(port),
            PortState::Silent => found.slow.push(port),
            PortState::Closed => {}
        }
    }
    if let (Some(p), Some(dir)) = (&path, cache_dir) {
        let _ = std::fs::create_dir_all(dir);
        let probe = Probe {
            checked_ms: now_ms,
            ports: ports.to_vec(),
            open: found.open.clone(),
            slow: found.slow.clone(),
        };
        let _ = crate::store::write_atomic(p, &serde_json::to_vec(&probe).expect("serializes"));
    }
    found
}

/// Providers for the open ports that no configured provider already covers.
pub fn providers(open: &[u16], configured: &[Provider]) -> Vec<Provider> {
    open.iter()
        .filter(|port| {
            !configured.iter().any(|p| {
                reqwest::Url::parse(&p.base_url).is_ok_and(|u| {
                    u.port() == Some(**port) && crate::providers::is_loopback_url(&p.base_url)
                })
            })
        })
        .map(|&port| {
            Provider::custom(
                &name_for(port),
                &format!("http://127.0.0.1:{port}/v1"),
                Tier::Local,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dedup() {
        assert_eq!(name_for(11434), "ollama");
        assert_eq!(name_for(9999), "local-9999");
        let configured = vec![Provider::custom(
            "mine",
            "http://localhost:8080/v1",
            Tier::Cloud,
        )];
        let found = providers(&[8080, 11434], &configured);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "ollama");
        assert_eq!(found[0].tier, Tier::Local);
    }

    #[test]
    fn probe_finds_a_listener_and_skips_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open_port = listener.local_addr().unwrap().port();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A listener that never accepts: the kernel completes the connection, nobody
        // answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten().take(1) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 256];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        });
        let found = rt.block_on(open_ports(&[open_port, closed_port, silent_port], None, 0));
        assert_eq!(found.open, vec![open_port]);
        assert_eq!(found.slow, vec![silent_port]);
        drop(silent);
    }
}
