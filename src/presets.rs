//! The built-in providers (DESIGN §2) as data: base URL, key variable, sign-up page,
//! documented free limits, header dialect, where the day resets, and the free models with
//! their capabilities where the provider's own `/models` does not say enough. Figures come
//! from `reference/openrouter.md` §2 and `reference/keyless-providers.md` (2026) and change
//! often: update the table, not the code.

/// How a provider's catalog and quirks are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenRouter: `:free` models by price, account-wide free quota, router models.
    OpenRouter,
    /// Any other OpenAI-compatible endpoint.
    OpenAiCompatible,
}

/// Where a provider stands in the plan: keyed clouds first, then local servers found by
/// themselves, then keyless services (DESIGN §2). `models --json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Cloud,
    Local,
    Keyless,
}

/// Which rate-limit headers a provider sends on every reply (reference §0 item 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `X-RateLimit-*` on 429 only (read by the classifier).
    OpenRouter,
    /// `x-ratelimit-remaining-requests` counts the **day**; reset like `2m59.56s`.
    Groq,
    /// `x-ratelimit-remaining-requests-day`, `x-ratelimit-reset-requests-day` (seconds).
    Cerebras,
    /// `x-ratelimit-remaining-req-minute`.
    Mistral,
    /// `x-ratelimit-remaining-requests` / `x-ratelimit-reset-requests`, window unknown.
    Generic,
}

/// When a provider's daily quota starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayReset {
    UtcMidnight,
    /// Gemini: midnight Pacific time, taken as 08:00 UTC (an hour late in summer time).
    PacificMidnight,
}

impl DayReset {
    /// Milliseconds to add to a Unix time so that whole days start at the reset.
    pub fn offset_ms(self) -> i64 {
        match self {
            DayReset::UtcMidnight => 0,
            DayReset::PacificMidnight => -8 * 3_600_000,
        }
    }
}

/// A provider's documented free-tier request limits, when it has provider-wide ones. A
/// daily limit learned from the provider's own 429 replaces `per_day` (see `state.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
}

/// A model a preset knows: capabilities and context.
#[derive(Debug, Clone, Copy)]
pub struct Hint {
    pub id: &'static str,
    pub context: u64,
    pub vision: bool,
    pub tools: bool,
    pub schema: bool,
}

const fn m(id: &'static str, context: u64, vision: bool, tools: bool, schema: bool) -> Hint {
    Hint {
        id,
        context,
        vision,
        tools,
        schema,
    }
}

/// Where the model list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    /// `GET {base}/models`, with `models` as capability hints for the ids it lists.
    Fetch,
    /// Only `models`: the provider's list is missing, partial, or has no capabilities.
    Listed,
}

#[derive(Debug)]
pub struct Preset {
    pub name: &'static str,
    pub base_url: &'static str,
    /// `None`: keyless (a key is sent when `optional_key_env` is set).
    pub key_env: Option<&'static str>,
    pub optional_key_env: Option<&'static str>,
    /// A second variable substituted for `{account_id}` in the base URL (Cloudflare).
    pub account_env: Option<&'static str>,
    pub kind: ProviderKind,
    pub tier: Tier,
    pub signup: &'static str,
    pub limits: Limits,
    /// The documented free allowance, for people (README, `config show`).
    pub allowance: &'static str,
    pub day_reset: DayReset,
    pub dialect: Dialect,
    pub catalog: Catalog,
    pub models: &'static [Hint],
    /// `max_tokens` sent when the user gives none (Cerebras counts it against the quota
    /// before answering, so it is kept tight).
    pub default_max_tokens: Option<u32>,
    /// Said on stderr whenever this provider answers (keyless services).
    pub data_note: Option<&'static str>,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "openrouter",
        base_url: "https://openrouter.ai/api/v1",
        key_env: Some("OPENROUTER_API_KEY"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenRouter,
        tier: Tier::Cloud,
        signup: "https://openrouter.ai/keys",
        // 20 a minute for every account; 50 or 1000 a day depending on credits bought, so
        // the daily figure is learned from the first quota 429 (reference §1.6).
        limits: Limits {
            per_minute: Some(20),
            per_day: None,
        },
        allowance: "20 requests/min and 50 a day (1000 after buying 10 credits), shared by all :free models",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::OpenRouter,
        catalog: Catalog::Fetch,
        models: &[],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "gemini",
        base_url: "https://generativelanguage.googleapis.com/v1beta/openai",
        key_env: Some("GEMINI_API_KEY"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://aistudio.google.com/apikey",
        limits: Limits {
            per_minute: None,
            per_day: None,
        },
        allowance: "per model: Flash 5 requests/min and 20 a day, Flash-Lite 15/min and 500/day, Gemma 30/min and 14,400/day; the day resets at midnight Pacific",
        day_reset: DayReset::PacificMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m("gemini-2.5-flash", 1_048_576, true, true, true),
            m("gemini-2.5-flash-lite", 1_048_576, true, true, true),
            m("gemma-3-27b-it", 131_072, true, false, false),
            m("gemma-3-12b-it", 131_072, true, false, false),
        ],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "groq",
        base_url: "https://api.groq.com/openai/v1",
        key_env: Some("GROQ_API_KEY"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://console.groq.com/keys",
        limits: Limits {
            per_minute: Some(30),
            per_day: None,
        },
        allowance: "per model, e.g. Llama 3.3 70B 1,000 requests/day and 12k tokens/min, Llama 3.1 8B 14,400/day",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Groq,
        catalog: Catalog::Fetch,
        models: &[
            m("llama-3.3-70b-versatile", 131_072, false, true, false),
            m("llama-3.1-8b-instant", 131_072, false, true, false),
            m("openai/gpt-oss-120b", 131_072, false, true, true),
            m("openai/gpt-oss-20b", 131_072, false, true, true),
            m("qwen/qwen3-32b", 131_072, false, true, false),
            m(
                "meta-llama/llama-4-scout-17b-16e-instruct",
                131_072,
                true,
                true,
                true,
            ),
        ],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "cerebras",
        base_url: "https://api.cerebras.ai/v1",
        key_env: Some("CEREBRAS_API_KEY"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://cloud.cerebras.ai",
        limits: Limits {
            per_minute: Some(30),
            per_day: Some(14_400),
        },
        allowance: "30 requests/min, 900/hour, 14,400/day, 60k tokens/min; 65k context on the free tier",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Cerebras,
        catalog: Catalog::Fetch,
        models: &[
            m("gpt-oss-120b", 65_536, false, true, true),
            m("llama3.1-8b", 32_768, false, true, false),
            m("qwen-3-32b", 65_536, false, true, true),
        ],
        default_max_tokens: Some(2048),
        data_note: None,
    },
    Preset {
        name: "mistral",
        base_url: "https://api.mistral.ai/v1",
        key_env: Some("MISTRAL_API_KEY"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://console.mistral.ai/api-keys",
        limits: Limits {
            per_minute: Some(60),
            per_day: None,
        },
        allowance: "Experiment plan: 1 request/s, 500k tokens/min, 1B tokens/month per model (needs opting in to training)",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Mistral,
        catalog: Catalog::Fetch,
        models: &[],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "github",
        base_url: "https://models.github.ai/inference",
        key_env: Some("GITHUB_TOKEN"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://github.com/settings/tokens (a token with models: read)",
        limits: Limits {
            per_minute: Some(15),
            per_day: Some(150),
        },
        allowance: "low-tier models about 15 requests/min and 150/day, 8k tokens in and 4k out per request (depends on the Copilot plan)",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m("openai/gpt-4.1-mini", 8_000, true, true, true),
            m("openai/gpt-4o-mini", 8_000, true, true, true),
            m("meta/Llama-3.3-70B-Instruct", 8_000, false, true, false),
            m("deepseek/DeepSeek-V3-0324", 8_000, false, true, false),
        ],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "nvidia",
        base_url: "https://integrate.api.nvidia.com/v1",
        key_env: Some("NVIDIA_API_KEY"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://build.nvidia.com",
        limits: Limits {
            per_minute: Some(40),
            per_day: None,
        },
        allowance: "about 40 requests/min (phone verification)",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m("meta/llama-3.3-70b-instruct", 131_072, false, true, false),
            m(
                "nvidia/llama-3.3-nemotron-super-49b-v1",
                131_072,
                false,
                true,
                false,
            ),
            m(
                "meta/llama-4-maverick-17b-128e-instruct",
                131_072,
                true,
                true,
                false,
            ),
        ],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "cloudflare",
        base_url: "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
        key_env: Some("CLOUDFLARE_API_TOKEN"),
        optional_key_env: None,
        account_env: Some("CLOUDFLARE_ACCOUNT_ID"),
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://dash.cloudflare.com/profile/api-tokens",
        limits: Limits {
            per_minute: None,
            per_day: None,
        },
        allowance: "10,000 Neurons/day, reset at 00:00 UTC",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m(
                "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
                24_000,
                false,
                true,
                false,
            ),
            m(
                "@cf/mistralai/mistral-small-3.1-24b-instruct",
                128_000,
                true,
                true,
                false,
            ),
            m("@cf/meta/llama-3.1-8b-instruct", 7_968, false, false, false),
        ],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "huggingface",
        base_url: "https://router.huggingface.co/v1",
        key_env: Some("HF_TOKEN"),
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Cloud,
        signup: "https://huggingface.co/settings/tokens (fine-grained, \"Make calls to Inference Providers\")",
        limits: Limits {
            per_minute: None,
            per_day: None,
        },
        allowance: "$0.10 of credits a month",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m("openai/gpt-oss-120b", 131_072, false, true, true),
            m(
                "meta-llama/Llama-3.3-70B-Instruct",
                131_072,
                false,
                true,
                false,
            ),
            m("Qwen/Qwen2.5-VL-7B-Instruct", 32_768, true, false, false),
        ],
        default_max_tokens: None,
        data_note: None,
    },
    Preset {
        name: "ovhcloud",
        base_url: "https://oai.endpoints.kepler.ai.cloud.ovh.net/v1",
        key_env: None,
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Keyless,
        signup: "https://endpoints.ai.cloud.ovh.net",
        // 2 requests/min per IP and model: kept per model by the cool-downs, not here.
        limits: Limits {
            per_minute: None,
            per_day: None,
        },
        allowance: "anonymous: 2 requests/min per IP and model",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m("Meta-Llama-3_3-70B-Instruct", 131_072, false, true, false),
            m("gpt-oss-120b", 131_072, false, true, false),
            m("Qwen3-32B", 32_768, false, true, false),
            m(
                "Mistral-Small-3.2-24B-Instruct-2506",
                131_072,
                true,
                true,
                false,
            ),
            m("Qwen2.5-VL-72B-Instruct", 32_768, true, false, false),
        ],
        default_max_tokens: None,
        data_note: Some("OVHcloud AI Endpoints, a keyless free service"),
    },
    Preset {
        name: "llm7",
        base_url: "https://api.llm7.io/v1",
        key_env: None,
        optional_key_env: Some("LLM7_API_KEY"),
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Keyless,
        signup: "https://token.llm7.io (optional token)",
        limits: Limits {
            per_minute: Some(10),
            per_day: None,
        },
        allowance: "anonymous, per IP: 1 request/s, 10/min, 60/hour, 500k tokens/day",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m("default", 32_768, false, false, false),
            m("fast", 32_768, false, false, false),
        ],
        default_max_tokens: None,
        data_note: Some(
            "LLM7, a keyless free service run from the UK that forwards to upstream models and may log prompts",
        ),
    },
    Preset {
        name: "kilo",
        base_url: "https://api.kilo.ai/api/gateway",
        key_env: None,
        optional_key_env: None,
        account_env: None,
        kind: ProviderKind::OpenAiCompatible,
        tier: Tier::Keyless,
        signup: "https://kilo.ai",
        limits: Limits {
            per_minute: None,
            per_day: None,
        },
        allowance: "anonymous: 200 requests/hour per IP across its free models",
        day_reset: DayReset::UtcMidnight,
        dialect: Dialect::Generic,
        catalog: Catalog::Listed,
        models: &[
            m(
                "nvidia/nemotron-3-super-120b-a12b:free",
                131_072,
                false,
                true,
                false,
            ),
            m("minimax/minimax-m2.7:free", 131_072, false, true, false),
            m("tencent/hy3:free", 32_768, false, false, false),
        ],
        default_max_tokens: None,
        data_note: Some("Kilo Gateway, a keyless free service whose free routes may log prompts"),
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables_follow_the_contract() {
        let pairs: Vec<(&str, Option<&str>)> =
            PRESETS.iter().map(|p| (p.name, p.key_env)).collect();
        for (name, var) in [
            ("openrouter", "OPENROUTER_API_KEY"),
            ("gemini", "GEMINI_API_KEY"),
            ("groq", "GROQ_API_KEY"),
            ("cerebras", "CEREBRAS_API_KEY"),
            ("mistral", "MISTRAL_API_KEY"),
            ("github", "GITHUB_TOKEN"),
            ("nvidia", "NVIDIA_API_KEY"),
            ("cloudflare", "CLOUDFLARE_API_TOKEN"),
            ("huggingface", "HF_TOKEN"),
        ] {
            assert!(pairs.contains(&(name, Some(var))), "{name}");
        }
        for keyless in ["ovhcloud", "llm7", "kilo"] {
            assert_eq!(find(keyless).unwrap().tier, Tier::Keyless);
            assert!(find(keyless).unwrap().data_note.is_some());
        }
        assert_eq!(
            find("cloudflare").unwrap().account_env,
            Some("CLOUDFLARE_ACCOUNT_ID")
        );
    }

    #[test]
    fn listed_presets_have_models_and_https() {
        for p in PRESETS {
            assert!(p.base_url.starts_with("https://"), "{}", p.name);
            if p.catalog == Catalog::Listed {
                assert!(!p.models.is_empty(), "{}", p.name);
            }
        }
    }
}
