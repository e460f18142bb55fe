//! The pure reconcile core, shared by the kube, local and compose modes.
//!
//! A pure function from (desired state, observed replica inventories and health) to a plan:
//! pull to X from Y, delete from Z, and the status to publish. No I/O, no async, no clock:
//! every input arrives as an argument, and the same inputs always give the same plan, so a
//! restarted operator converges (rule 4) and every rule is unit tested with tables.
//!
//! - [`model`]: input and output types.
//! - [`placement`]: ranking of targets, trims and pull sources (rule 7).
//! - [`file`]: [`plan_file`], one file's plan (rules 5, 8, 9), with the events it emits.
//! - [`deletion`]: the plan of a file being deleted.
//! - [`orphans`]: [`plan_orphans`], copies no catalog entry claims.

mod deletion;
mod events;
pub mod file;
pub mod model;
pub mod orphans;
pub mod placement;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_capacity;
#[cfg(test)]
mod tests_health;
#[cfg(test)]
mod tests_invariants;
#[cfg(test)]
mod tests_newer;

pub use file::plan_file;
pub use model::{
    Action, CopyView, DeleteReason, DesiredFile, Event, FilePlan, Health, Move, OrphanCopy,
    ReplicaId, ReplicaView,
};
pub use orphans::{plan_orphans, ReplicaInventory};
pub use placement::rendezvous_score;
