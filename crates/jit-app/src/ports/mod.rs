//! The small traits the use cases are written over; jit-store, jit-scim and
//! the tests implement them.

mod directory;
mod notify;
mod soc_store;
mod store;
mod tickets;

pub use directory::*;
pub use notify::*;
pub use soc_store::*;
pub use store::*;
pub use tickets::*;

use chrono::{DateTime, Utc};

/// The only source of "now" (clippy forbids `Utc::now()` elsewhere).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}
