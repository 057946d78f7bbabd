//! Local servers found by themselves (DESIGN §2): a cheap TCP probe of the usual loopback
//! ports, remembered for a short while in the cache dir. A refused connection on loopback
//! answers at once, so a machine with nothing running pays well under a millisecond.
//! Whether an open port really is an OpenAI-compatible server is settled by its `/models`.

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

#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    checked_ms: u64,
    ports: Vec<u16>,
    open: Vec<u16>,
}

/// Open ports among `ports`, from a fresh cache or a probe.
pub async fn open_ports(ports: &[u16], cache_dir: Option<&Path>, now_ms: u64) -> Vec<u16> {
    let path = cache_dir.map(|d| d.join("discovery.json"));
    if let Some(p) = &path
        && let Some(probe) = std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Probe>(&b).ok())
        && probe.ports == ports
        && now_ms.saturating_sub(probe.checked_ms) < CACHE_MS
    {
        return probe.open;
    }
    let checks = ports.iter().map(|&port| async move {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let ok = matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        );
        ok.then_some(port)
    });
    let open: Vec<u16> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    if let (Some(p), Some(dir)) = (&path, cache_dir) {
        let _ = std::fs::create_dir_all(dir);
        let probe = Probe {
            checked_ms: now_ms,
            ports: ports.to_vec(),
            open: open.clone(),
        };
        let _ = crate::store::write_atomic(p, &serde_json::to_vec(&probe).expect("serializes"));
    }
    open
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
        let open = rt.block_on(open_ports(&[open_port, closed_port], None, 0));
        assert_eq!(open, vec![open_port]);
    }
}
