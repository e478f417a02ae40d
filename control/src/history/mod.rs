//! The flow history: conversations per time bucket, kept for weeks.

mod conversation;

pub use conversation::{Conversation, ConversationKey};
