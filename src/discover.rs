//! Local servers found by themselves (DESIGN §2): a cheap TCP probe of the usual loopback
//! ports, remembered for a short while in the cache dir. A refused connection on loopback
//! answers at once, so a machine with nothing running pays well under a millisecond; a
//! port that accepts but does not answer HTTP within `PROBE_BUDGET` is skipped and
//! remembered like a closed one. Whether an open port really is an OpenAI-compatible
//! server is settled by its `/models`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::catalog::Model;
use crate::providers::{Provider, Tier};
use crate::wire::client::Client;

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

/// The base URL of a server found under this provider name (the reverse of `name_for`).
pub fn base_url_for(name: &str) -> Option<String> {
    let port = DEFAULT_PORTS
        .iter()
        .copied()
        .find(|&p| name_for(p) == name)
        .or_else(|| name.strip_prefix("local-")?.parse().ok())?;
    Some(format!("http://127.0.0.1:{port}/v1"))
}

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

/// How long a found server may take to describe itself.
const DESCRIBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Ollama is asked about each model: at most this many.
const DESCRIBE_MODELS: usize = 16;

/// Reads what a found server says about itself, where it can say it, into its models'
/// capabilities (and context, when its list had none): llama.cpp's `GET /props`
/// (`modalities.vision`, `chat_template_caps.supports_tools`; it always takes a
/// `json_schema` response format), LM Studio's `GET /api/v0/models` (`type` `vlm`,
/// `capabilities` `tool_use`, `max_context_length`), Ollama's `POST /api/show`
/// (`capabilities`: `vision`, `tools`). A server that says nothing stays text-only.
pub async fn describe(client: &Client, provider: &Provider, models: &mut [Model]) {
    let root = provider.base_url.trim_end_matches("/v1").to_string();
    let props_url = format!("{root}/props");
    let lmstudio_url = format!("{root}/api/v0/models");
    let json = |b: Option<Vec<u8>>| b.and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    if let Some(props) = json(
        client
            .describe_local(provider, &props_url, None, DESCRIBE_TIMEOUT)
            .await,
    ) && (props.get("modalities").is_some() || props.get("chat_template_caps").is_some())
    {
        let caps = &props["chat_template_caps"];
        let tools = caps["supports_tools"].as_bool() == Some(true)
            || caps["supports_tool_calls"].as_bool() == Some(true);
        for m in models.iter_mut() {
            m.caps.vision |= props["modalities"]["vision"].as_bool() == Some(true);
            m.caps.tools |= tools;
            m.caps.schema = true;
        }
        return;
    }
    if let Some(list) = json(
        client
            .describe_local(provider, &lmstudio_url, None, DESCRIBE_TIMEOUT)
            .await,
    ) && let Some(entries) = list["data"].as_array()
    {
        for m in models.iter_mut() {
            let Some(e) = entries.iter().find(|e| e["id"] == m.id.as_str()) else {
                continue;
            };
            let said = |c: &str| {
                e["capabilities"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == c))
            };
            m.caps.vision |= e["type"] == "vlm";
            m.caps.tools |= said("tool_use");
            m.caps.schema = true;
            if m.context.is_none() {
                m.context = e["max_context_length"]
                    .as_u64()
                    .filter(|&n| n > 0 && n <= MAX_CONTEXT);
            }
        }
        return;
    }
    for m in models.iter_mut().take(DESCRIBE_MODELS) {
        let ask = serde_json::json!({"model": m.id});
        let shown = client
            .describe_local(
                provider,
                &format!("{root}/api/show"),
                Some(&ask),
                DESCRIBE_TIMEOUT,
            )
            .await;
        let Some(show) = json(shown) else {
            // Not Ollama: nobody else answers this.
            return;
        };
        let said = |c: &str| {
            show["capabilities"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == c))
        };
        m.caps.vision |= said("vision");
        m.caps.tools |= said("tools");
        m.caps.schema |= said("completion");
    }
}

/// No local model has a context of more than this many tokens; a larger figure is not
/// believed.
const MAX_CONTEXT: u64 = 100_000_000;

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
        assert_eq!(
            base_url_for("ollama").as_deref(),
            Some("http://127.0.0.1:11434/v1")
        );
        assert_eq!(
            base_url_for("local-9999").as_deref(),
            Some("http://127.0.0.1:9999/v1")
        );
        assert_eq!(base_url_for("mine"), None);
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
