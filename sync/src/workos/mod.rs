//! Everything WorkOS-specific: the API client (`client.rs`: paced, retried GETs and complete
//! listings), the objects the companion reads from it, checked field by field (`model.rs`), and
//! the signatures of its webhooks (`webhook.rs`). Nothing here touches the database.

pub mod client;
pub mod model;
pub mod webhook;

pub use client::WorkOs;
