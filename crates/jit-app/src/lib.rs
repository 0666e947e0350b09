//! jit-app: jit-broker's use cases, written once over the ports in [`ports`].

pub mod activity;
pub mod app;
pub mod approvals;
pub mod budget;
pub mod chat;
pub mod clock;
pub mod converge;
pub mod doors;
pub mod error;
pub mod evidence;
pub mod feed;
pub mod limits;
pub mod mailer;
pub mod ports;
pub mod reconcile;
pub mod soc;
pub mod throttle;
pub mod tickets;
pub mod worker;

pub use activity::Activity;
pub use app::{App, Requester, SYSTEM_ACTOR};
pub use approvals::Person;
pub use budget::{Budget, Lane, Turn};
pub use clock::{ManualClock, SystemClock};
pub use converge::{ConvergeError, ConvergeReport};
pub use doors::{Extended, Waiting};
pub use error::AppError;
pub use evidence::{AUDIT_CHECKPOINT, AuditFilter, AuditPage};
pub use feed::{Feed, FeedConfig};
pub use limits::{RequestLimiter, RequestLimits};
pub use mailer::{Mailer, MailerConfig};
pub use ports::*;
pub use reconcile::ReconcileConfig;
pub use soc::LoginCheck;
pub use tickets::{ChangeOutcome, PollReport, SERVICENOW_ACTOR, WebhookAnswer};
pub use worker::{Worker, WorkerConfig, WorkerPulse};
