//! Node errors as gRPC statuses, in one place: what the runtime says went
//! wrong, told to the caller with the code that says what to do about it.

use tandem_node::membership::MembershipError;
use tandem_node::write::WriteError;
use tonic::Status;

/// A write that was not committed: `UNAVAILABLE` when a retry may succeed
/// (no coordinator, an election or another change under way, this node no
/// longer the coordinator), `FAILED_PRECONDITION` when Raft refused it as
/// asked, `INTERNAL` when Raft stopped here.
pub fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::Retry(m) | WriteError::Forward { message: m, .. } => Status::unavailable(m),
        WriteError::Refused(m) => Status::failed_precondition(m),
        WriteError::Fatal(m) => Status::internal(m),
    }
}

/// A peer's report that was not committed: always `UNAVAILABLE`, so the
/// sending node tries again (with whoever is coordinator then).
pub fn report_status(e: WriteError) -> Status {
    Status::unavailable(e.to_string())
}

/// A membership change that was not made, with the code for its kind; a
/// failed write as [`write_status`] says.
pub fn membership_status(e: MembershipError) -> Status {
    match e {
        MembershipError::Invalid(m) => Status::invalid_argument(m),
        MembershipError::Exists(m) => Status::already_exists(m),
        MembershipError::NotFound(m) => Status::not_found(m),
        MembershipError::Refused(m) => Status::failed_precondition(m),
        MembershipError::TimedOut(m) => Status::deadline_exceeded(m),
        MembershipError::Write(w) => write_status(w),
        MembershipError::Internal(m) => Status::internal(m),
    }
}

/// An operator's request refused by the core's preconditions, as a gRPC status.
pub fn refusal_status(r: tandem_core::operator::Refusal) -> Status {
    use tandem_core::operator::RefusalKind;
    match r.kind {
        RefusalKind::NotFound => Status::not_found(r.message),
        RefusalKind::FailedPrecondition => Status::failed_precondition(r.message),
    }
}
