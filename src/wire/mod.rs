//! The network edge: one HTTP client, the SSE decoder and the OpenAI-compatible wire types.
//! Nothing here decides anything; it reports what came back.

pub mod client;
pub mod openai;
pub mod sse;
