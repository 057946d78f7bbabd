//! Opening a session: which providers this run may use (keyed presets and configured
//! endpoints, local servers found by themselves, keyless services as `keyless` says), `-p`
//! applied with clear errors, and their catalogs loaded (DESIGN §2).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::catalog::{self, Defer, Loaded};
use crate::config::{Config, Keyless};
use crate::discover;
use crate::error::{Error, ErrorKind, Result};
use crate::output::Printer;
use crate::providers::{self, Disabled, Provider, Tier};
use crate::request::Route;
use crate::settings::{self, Sources};
use crate::wire::client::{Client, ClientError, Trust};

/// Every provider this run may use, with those that are off and why, and the keyless
/// services that wait for `keyless = "auto"` to let them in.
pub struct Providers {
    pub list: Vec<Provider>,
    pub disabled: Vec<Disabled>,
    pub keyless_waiting: Vec<Provider>,
}

/// Keyed presets and configured endpoints, found local servers, and the keyless services
/// the `keyless` setting admits now.
pub fn gather(
    config: &Config,
    sources: &Sources,
    rt: &tokio::runtime::Runtime,
    printer: &Printer,
) -> Providers {
    let resolved = providers::resolve(config, &settings::env_var);
    if !resolved.disabled.is_empty() {
        let off: Vec<_> = resolved.disabled.iter().map(|d| d.name.as_str()).collect();
        printer.trace(&format!(
            "providers off: {} (`freeroute config show` says why)",
            off.join(", ")
        ));
    }
    let mut list = resolved.enabled;
    if sources.discover {
        let started = Instant::now();
        let open = rt.block_on(discover::open_ports(
            &sources.discover_ports,
            catalog::cache_dir().as_deref(),
            crate::now_ms(),
        ));
        let found = discover::providers(&open.open, &list);
        printer.trace(&format!(
            "discovery: ports {:?}, open {:?}, in {} µs{}",
            sources.discover_ports,
            open.open,
            started.elapsed().as_micros(),
            if open.cached { " (cached)" } else { "" }
        ));
        for port in &open.slow {
            printer.trace(&format!(
                "discovery: port {port} accepts connections but sent no HTTP reply within {} ms: skipped (remembered for {} s)",
                discover::PROBE_BUDGET.as_millis(),
                discover::CACHE_MS / 1000
            ));
        }
        list.extend(found);
    }
    let (keyless_now, keyless_waiting) = match sources.keyless {
        Keyless::Always => (resolved.keyless, Vec::new()),
        Keyless::Never => (Vec::new(), Vec::new()),
        Keyless::Auto => (Vec::new(), resolved.keyless),
    };
    list.extend(keyless_now);
    Providers {
        list,
        disabled: resolved.disabled,
        keyless_waiting,
    }
}

/// Applies `-p` to the providers, with clear errors for unknown or disabled names; with no
/// provider at all, says which variable to set.
pub fn select(
    found: Providers,
    route: &Route,
    config_path: Option<&Path>,
    mode: Keyless,
) -> Result<(Vec<Provider>, Vec<Provider>)> {
    let Providers {
        mut list,
        disabled,
        keyless_waiting,
    } = found;
    for name in &route.providers {
        if list.iter().any(|p| &p.name == name) {
            continue;
        }
        // Naming a keyless service with -p asks for it.
        if let Some(k) = keyless_waiting.iter().find(|p| &p.name == name) {
            list.push(k.clone());
            continue;
        }
        if let Some(d) = disabled.iter().find(|d| &d.name == name) {
            return Err(Error::config(format!(
                "Provider `{name}` is off: {}",
                d.reason
            )));
        }
        let known: Vec<_> = list.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::usage(format!(
            "Unknown provider `{name}` (-p); enabled: {}",
            known.join(", ")
        )));
    }
    if list.is_empty() && keyless_waiting.is_empty() {
        return Err(no_provider_error(config_path, mode));
    }
    Ok((list, keyless_waiting))
}

fn no_provider_error(config_path: Option<&Path>, mode: Keyless) -> Error {
    let or = &crate::presets::PRESETS[0];
    let where_ = config_path.map_or_else(
        || "the config file".to_string(),
        |p| p.display().to_string(),
    );
    let keyless = if mode == Keyless::Never {
        "; keyless services are off (keyless = false or FREEROUTE_KEYLESS=0)"
    } else {
        ""
    };
    Error::config(format!(
        "No provider has an API key: set {} (or another provider's key){keyless}",
        or.key_env.unwrap_or_default()
    ))
    .with_hint(format!(
        "Get a free key at {}, run a local server (Ollama, llama.cpp), or add an OpenAI-compatible provider to {where_} (freeroute config init)",
        or.signup
    ))
}

/// The providers' catalogs; in `keyless = "auto"` mode the keyless services' too when
/// nothing else offers a model. Errors when no model list could be had at all.
#[allow(clippy::too_many_arguments)]
pub fn load_catalogs(
    enabled: &mut Vec<Provider>,
    keyless_waiting: Vec<Provider>,
    route: &Route,
    timeout: Duration,
    config_path: Option<&Path>,
    mode: Keyless,
    client: &std::cell::OnceCell<Client>,
    trust: &Trust,
    defer: Option<Defer<'_>>,
    rt: &tokio::runtime::Runtime,
    printer: &Printer,
) -> Result<Loaded> {
    let make_client = || -> std::result::Result<Client, ClientError> {
        if let Some(c) = client.get() {
            return Ok(c.clone());
        }
        let c = Client::new(trust)?;
        Ok(client.get_or_init(|| c).clone())
    };
    let fetch_timeout = (timeout / 3).min(Duration::from_secs(15));
    // Ctrl-C while the lists are fetched ends the run as Ctrl-C does later: exit 130,
    // and under --json the contract's one failure object.
    let load = |providers: &[Provider], defer: Option<Defer<'_>>| -> Result<Loaded> {
        rt.block_on(async {
            tokio::select! {
                loaded = catalog::load(
                    providers,
                    route.catalog,
                    route.catalog_ttl,
                    &make_client,
                    crate::now_ms(),
                    fetch_timeout,
                    defer,
                ) => Ok(loaded),
                _ = tokio::signal::ctrl_c() => Err(Error::new(
                    ErrorKind::Interrupted,
                    "Interrupted while the model lists were fetched",
                )),
            }
        })
    };
    let mut loaded = load(enabled, defer)?;
    // `keyless = "auto"`: the keyless services only when nothing else offers a model:
    // no provider with a key (or a config entry) and no local server with a model. A keyed
    // provider whose catalog failed does not open the door to services that may log prompts.
    let keyed = enabled.iter().any(|p| p.tier == Tier::Cloud);
    let local_models = loaded.models.iter().any(|m| m.tier == Tier::Local);
    if !keyed && !local_models && !keyless_waiting.is_empty() && route.providers.is_empty() {
        let names: Vec<_> = keyless_waiting.iter().map(|p| p.name.as_str()).collect();
        printer.note(&format!(
            "No key is set and no local server answered: using keyless free services ({}), which may log prompts",
            names.join(", ")
        ));
        let more = load(&keyless_waiting, None)?;
        loaded.models.extend(more.models);
        enabled.extend(keyless_waiting);
    }
    for n in &loaded.notes {
        printer.note(n);
    }
    let mut refused = Vec::new();
    for (p, why) in &loaded.failed {
        let provider = enabled.iter().find(|e| &e.name == p);
        // A key refused while listing models is a credentials problem: name the variable.
        if why.refused_key() {
            let var = provider
                .and_then(|e| e.key_env.clone())
                .unwrap_or_else(|| format!("the key of {p}"));
            printer.note(&format!("{p} refused its key ({why}): check {var}"));
            refused.push(var);
            continue;
        }
        // A port that is open but is no LLM server is not worth a note on every run.
        match provider {
            Some(e) if e.tier == Tier::Local => {
                printer.trace(&format!("No model list from {p}: {why}"))
            }
            _ => printer.note(&format!("No model list from {p}: {why}")),
        }
    }
    if loaded.models.is_empty() && !refused.is_empty() && refused.len() == loaded.failed.len() {
        return Err(Error::config("Every provider refused its key")
            .with_hint(format!("Check {}", refused.join(", "))));
    }
    if loaded.models.is_empty() && !loaded.failed.is_empty() {
        if enabled.iter().all(|p| p.tier == Tier::Local) {
            return Err(no_provider_error(config_path, mode));
        }
        let names: Vec<_> = loaded
            .failed
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect();
        // The fetch's time is a share of the run's: when it ran out everywhere, the
        // deadline ended the run (DESIGN §4: exit 5).
        if loaded.failed.iter().all(|(_, why)| why.timed_out) {
            return Err(Error::new(
                ErrorKind::Deadline,
                format!(
                    "The deadline passed before any model list arrived ({})",
                    names.join("; ")
                ),
            )
            .with_hint("Raise --timeout, or run once with a longer one to fill the cache"));
        }
        let hint = if route.catalog == crate::request::CatalogMode::Offline {
            "Run once without --offline to fill the cache"
        } else {
            "Check the network and the providers' base_url (`freeroute config show`)"
        };
        return Err(Error::new(
            ErrorKind::AllFailed,
            format!("Could not get any model list ({})", names.join("; ")),
        )
        .with_hint(hint));
    }
    Ok(loaded)
}

/// `config show`: what the servers found on loopback ports serve (asked, or their cached
/// lists), within 2 s.
pub fn local_models(
    found: &Providers,
    config: &Config,
    sources: &Sources,
    rt: &tokio::runtime::Runtime,
) -> Loaded {
    let here: Vec<_> = found
        .list
        .iter()
        .filter(|p| p.tier == Tier::Local)
        .cloned()
        .collect();
    // Loopback servers are plain http: no certificate is involved.
    let trust =
        crate::wire::client::Trust::load(sources.ca_file.as_deref(), false).unwrap_or_default();
    rt.block_on(catalog::load(
        &here,
        crate::request::CatalogMode::Normal,
        config
            .defaults
            .catalog_ttl
            .unwrap_or(settings::DEFAULT_CATALOG_TTL),
        &|| Client::new(&trust),
        crate::now_ms(),
        Duration::from_secs(2),
        None,
    ))
}
