//! Acting on spam: what spamscope may do in each channel and the doing.
//!
//! - [`policy`]: per-channel policies (off, suggest or act for each spam
//!   event class and for flagged users; a ladder of steps; dry-run by
//!   default).
//! - [`engine`]: chat and detector outputs in, suggested and taken actions
//!   out, with nukes (a grace window for new copies) and undo.
//! - [`action`]: the actions and the audit record of each.
//! - [`backtest`]: a policy over recorded chat, compared with what the
//!   moderators did.
//! - [`platform`], [`helix`] and [`youtube`]: sending actions to Twitch
//!   (Helix moderation API) and YouTube (Data API), rate limits honoured.

pub mod action;
pub mod backtest;
pub mod engine;
pub mod helix;
pub mod platform;
pub mod policy;
pub mod youtube;

pub use action::{Action, ActionKind, Record, Status, Target};
pub use engine::{Engine, EngineError, NukeReport, NukeRequest, Output};
pub use policy::{Mode, Policies, Policy, PolicyError, Step};
