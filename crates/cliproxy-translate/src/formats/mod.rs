//! The four formats, one codec each.

mod anthropic;
mod gemini;
mod openai_chat;
mod openai_responses;
mod shared;

pub(crate) use anthropic::Anthropic;
pub(crate) use gemini::Gemini;
pub(crate) use openai_chat::OpenAiChat;
pub(crate) use openai_responses::OpenAiResponses;
