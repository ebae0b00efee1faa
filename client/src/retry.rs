//! When a failed attempt is tried again, where, after how long, and what the
//! caller is told when the client gives up. Pure functions of statuses and
//! instants: no sockets, no clock reads, so every rule is unit-tested.
//!
//! # Which calls are retried
//!
//! A failure that says "this coordinator could not serve the call" (a
//! connect error, UNAVAILABLE, a transport error mid-call, DEADLINE_EXCEEDED)
//! moves the call to the next coordinator. Whether it is *repeated* depends
//! on what a repeat could do:
//!
//! - Reads (ReadCache, BatchRead, opening a ReadStream, ClusterStatus) change
//!   nothing, so repeating them is always harmless.
//! - DeleteCache, WriteCache and BatchWrite are retried too although they
//!   write. Each attempt gets a fresh version from the coordinator's hybrid
//!   logical clock, and the store keeps the highest version per key
//!   (last-writer-wins), so if the first attempt was applied after all, the
//!   repeat simply supersedes it with the same value. The only visible trace
//!   is a version number that was never reported to anyone. (A delete
//!   repeated after an applied first attempt reports `deleted = false`: the
//!   key is gone either way.)
//! - UpdateCache is a compare-and-set: if the first attempt was applied, the
//!   stored version moved and a repeat would fail with FAILED_PRECONDITION,
//!   or, with no expected version, replace the value a second time. It is
//!   retried only after a connect error, which proves the request never left
//!   this process.
//! - A WriteStream consumes its source as it goes, so it is repeated only if
//!   it failed before its first chunk was handed to gRPC; once data was sent
//!   it cannot be replayed.
//! - Any other status (NOT_FOUND, INVALID_ARGUMENT, ...) is the cluster's
//!   answer and is returned as is: another coordinator would say the same.
//!
//! # Time
//!
//! Each attempt runs under its own deadline ([`RetryPolicy::attempt_timeout`])
//! and the whole call under an overall one ([`RetryPolicy::deadline`]); an
//! attempt never outlives the overall deadline. Between attempts the client
//! pauses for a short exponential backoff ([`BACKOFF_INITIAL_MS`] doubling up
//! to [`BACKOFF_MAX_MS`]), enough to let a restarting coordinator bind its
//! port without slowing a fail-over noticeably.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, ConnectError, Status};

use crate::error::ClientError;

/// Pause before the first retry.
pub const BACKOFF_INITIAL_MS: u64 = 25;
/// Longest pause between two attempts, however many there are.
pub const BACKOFF_MAX_MS: u64 = 400;
/// Stands in for "no deadline" when a configured deadline does not fit in an
/// `Instant` (tokio uses the same horizon for its own far future).
pub const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// What a call may do to the cluster, which decides when it may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Reads, and writes whose repetition last-writer-wins makes harmless.
    Idempotent,
    /// UpdateCache: repeated only when it certainly never reached a
    /// coordinator.
    CompareAndSet,
    /// WriteStream: repeated only before any data was sent.
    Stream,
}

/// What a failed attempt says about the coordinator it went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made: the request never left.
    Connect,
    /// UNAVAILABLE: the coordinator (or the nodes behind it) could not serve.
    Unavailable,
    /// The connection failed during the call (reset, closed, protocol
    /// error): the request may or may not have been acted on.
    Transport,
    /// The attempt's deadline passed, here or at the coordinator.
    DeadlineExceeded,
    /// Any other status: the cluster's answer, not a fail-over reason.
    Answer,
}

impl Failure {
    /// Whether another coordinator might do better.
    pub fn is_failover(self) -> bool {
        !matches!(self, Failure::Answer)
    }
}

/// Sorts a failed attempt's status. Statuses decoded from a response carry no
/// source; those tonic builds from a local transport error do, which is how a
/// transport failure is told apart from a coordinator's own answer.
pub fn classify(status: &Status) -> Failure {
    if source_chain(status).any(|e| e.is::<ConnectError>()) {
        return Failure::Connect;
    }
    match status.code() {
        Code::Unavailable => Failure::Unavailable,
        Code::DeadlineExceeded => Failure::DeadlineExceeded,
        Code::Unknown | Code::Internal | Code::Cancelled if status.source().is_some() => Failure::Transport,
        _ => Failure::Answer,
    }
}

/// Whether a call of `kind` that failed with `failure` may be attempted
/// again; `data_sent` says whether a stream handed any chunk to gRPC. The
/// module header gives the reasoning.
pub fn should_retry(kind: CallKind, failure: Failure, data_sent: bool) -> bool {
    if !failure.is_failover() {
        return false;
    }
    match kind {
        CallKind::Idempotent => true,
        CallKind::CompareAndSet => failure == Failure::Connect,
        CallKind::Stream => !data_sent,
    }
}

/// The pause before retry number `retry` (1 for the second attempt).
pub fn backoff(retry: u32) -> Duration {
    let doublings = retry.saturating_sub(1).min(u64::BITS - 1);
    let ms = BACKOFF_INITIAL_MS.saturating_mul(1u64 << doublings).min(BACKOFF_MAX_MS);
    Duration::from_millis(ms)
}

/// The pauses between `attempts` attempts, summed. Once the backoff reaches
/// its cap every further pause is the cap, so this is a short loop even for
/// `u32::MAX` attempts.
fn total_backoff(attempts: u32) -> Duration {
    let mut total = Duration::ZERO;
    for retry in 1..attempts {
        let pause = backoff(retry);
        if pause == Duration::from_millis(BACKOFF_MAX_MS) {
            return total.saturating_add(pause.saturating_mul(attempts - retry));
        }
        total += pause;
    }
    total
}

/// How many attempts, each under which deadline, all under which overall
/// deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, at least 1.
    pub attempts: u32,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// Deadline of the whole call, measured from its start.
    pub deadline: Duration,
}

impl RetryPolicy {
    /// `attempts` attempts of `attempt_timeout` each, under the natural
    /// overall deadline.
    pub fn new(attempts: u32, attempt_timeout: Duration) -> Self {
        let mut policy = Self { attempts: attempts.max(1), attempt_timeout, deadline: Duration::ZERO };
        policy.deadline = policy.natural_deadline();
        policy
    }

    /// The longest all attempts and the pauses between them can take: the
    /// overall deadline when none is configured, so that a call always ends
    /// by it and never earlier than its attempts would.
    pub fn natural_deadline(&self) -> Duration {
        self.attempt_timeout.saturating_mul(self.attempts).saturating_add(total_backoff(self.attempts))
    }

    /// When a call starting at `start` must end.
    pub fn call_deadline(&self, start: Instant) -> Instant {
        start.checked_add(self.deadline).unwrap_or(start + FAR_FUTURE)
    }

    /// When an attempt starting at `now` must end, or `None` when the call's
    /// deadline has passed and no attempt may start.
    pub fn attempt_deadline(&self, now: Instant, call_deadline: Instant) -> Option<Instant> {
        if now >= call_deadline {
            return None;
        }
        Some(now.checked_add(self.attempt_timeout).map_or(call_deadline, |end| end.min(call_deadline)))
    }

    /// The pause before retry number `retry`, or `None` when the attempts
    /// are used up or the pause would reach the call's deadline (an attempt
    /// after it would have no time at all).
    pub fn pause_before(&self, retry: u32, now: Instant, call_deadline: Instant) -> Option<Duration> {
        if retry >= self.attempts {
            return None;
        }
        let pause = backoff(retry);
        (now.checked_add(pause)? < call_deadline).then_some(pause)
    }
}

/// Which coordinator attempt number `attempt` (0-based) goes to: the one
/// that answered last first, then round the list.
pub fn coordinator_for(first: usize, attempt: u32, coordinators: usize) -> usize {
    debug_assert!(coordinators > 0, "validated: at least one coordinator");
    (first + attempt as usize) % coordinators
}

/// One failed attempt, as reported to the caller when the client gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The coordinator the attempt went to.
    pub address: String,
    /// How it failed.
    pub failure: Failure,
    /// Readable cause: the status message and its root cause.
    pub detail: String,
}

impl AttemptFailure {
    /// Records a failed attempt at `address`.
    pub fn new(address: &str, status: &Status) -> Self {
        Self { address: address.to_owned(), failure: classify(status), detail: describe(status) }
    }
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.detail)
    }
}

/// Why the client stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every attempt was used.
    Exhausted,
    /// The overall deadline left no time for another attempt.
    Deadline,
    /// Repeating the call could apply it twice (see the module header).
    Unsafe(CallKind),
}

/// The error for a call whose attempts all failed over: DEADLINE_EXCEEDED
/// when every attempt ran out of time, UNAVAILABLE naming every coordinator
/// tried (and why) otherwise.
pub fn give_up(failures: &[AttemptFailure], stop: Stop) -> ClientError {
    if !failures.is_empty() && failures.iter().all(|f| f.failure == Failure::DeadlineExceeded) {
        return ClientError::DeadlineExceeded;
    }
    let tried = failures.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let why = match stop {
        Stop::Exhausted => "",
        Stop::Deadline => "; the call's deadline left no time for another attempt",
        Stop::Unsafe(CallKind::CompareAndSet) => "; not retried: the update may already have been applied",
        Stop::Unsafe(CallKind::Stream) => "; not retried: data was already sent from a source that cannot be replayed",
        Stop::Unsafe(CallKind::Idempotent) => "",
    };
    ClientError::Unavailable(format!("no coordinator could serve the call; tried {tried}{why}"))
}

/// The status message, followed by its root cause when tonic built the
/// status from a local error ("tcp connect error: Connection refused").
pub fn describe(status: &Status) -> String {
    let mut text =
        if status.message().is_empty() { format!("{:?}", status.code()) } else { status.message().to_owned() };
    if let Some(root) = source_chain(status).last() {
        let root = root.to_string();
        if !text.contains(&root) {
            text = format!("{text}: {root}");
        }
    }
    text
}

fn source_chain<'a>(status: &'a Status) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    let mut next = status.source();
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn connect_error() -> Status {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused");
        Status::from_error(Box::new(ConnectError(Box::new(io))))
    }

    fn transport_error() -> Status {
        Status::from_error(Box::new(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")))
    }

    #[test]
    fn classify_tells_local_failures_from_answers() {
        assert_eq!(classify(&connect_error()), Failure::Connect);
        assert_eq!(connect_error().code(), Code::Unavailable, "tonic reports connect errors as UNAVAILABLE");
        assert_eq!(classify(&transport_error()), Failure::Transport);
        assert_eq!(classify(&Status::unavailable("no live replica")), Failure::Unavailable);
        assert_eq!(classify(&Status::deadline_exceeded("slow")), Failure::DeadlineExceeded);
        // The same codes decoded from a response are answers.
        assert_eq!(classify(&Status::unknown("x")), Failure::Answer);
        assert_eq!(classify(&Status::internal("x")), Failure::Answer);
        for code in [Code::NotFound, Code::InvalidArgument, Code::FailedPrecondition, Code::ResourceExhausted] {
            assert_eq!(classify(&Status::new(code, "x")), Failure::Answer, "{code:?}");
        }
    }

    #[test]
    fn idempotent_calls_retry_on_every_failover_failure() {
        for failure in [Failure::Connect, Failure::Unavailable, Failure::Transport, Failure::DeadlineExceeded] {
            assert!(should_retry(CallKind::Idempotent, failure, false), "{failure:?}");
            assert!(should_retry(CallKind::Idempotent, failure, true), "{failure:?}");
        }
        assert!(!should_retry(CallKind::Idempotent, Failure::Answer, false));
    }

    #[test]
    fn compare_and_set_retries_only_after_a_connect_error() {
        assert!(should_retry(CallKind::CompareAndSet, Failure::Connect, false));
        for failure in [Failure::Unavailable, Failure::Transport, Failure::DeadlineExceeded, Failure::Answer] {
            assert!(!should_retry(CallKind::CompareAndSet, failure, false), "{failure:?}");
        }
    }

    #[test]
    fn streams_retry_only_before_data_was_sent() {
        for failure in [Failure::Connect, Failure::Unavailable, Failure::Transport, Failure::DeadlineExceeded] {
            assert!(should_retry(CallKind::Stream, failure, false), "{failure:?}");
            assert!(!should_retry(CallKind::Stream, failure, true), "{failure:?}");
        }
        assert!(!should_retry(CallKind::Stream, Failure::Answer, false));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let ms: Vec<u128> = (1..=7).map(|r| backoff(r).as_millis()).collect();
        assert_eq!(ms, vec![25, 50, 100, 200, 400, 400, 400]);
        assert_eq!(backoff(0), Duration::from_millis(BACKOFF_INITIAL_MS));
        assert_eq!(backoff(u32::MAX), Duration::from_millis(BACKOFF_MAX_MS));
    }

    #[test]
    fn natural_deadline_is_every_attempt_plus_every_pause() {
        let p = RetryPolicy::new(3, Duration::from_millis(2_000));
        assert_eq!(p.deadline, Duration::from_millis(2_000 * 3 + 25 + 50));
        assert_eq!(RetryPolicy::new(1, Duration::from_millis(7)).deadline, Duration::from_millis(7));
        assert_eq!(RetryPolicy::new(0, Duration::from_millis(7)).attempts, 1, "at least one attempt");
        // 25 + 50 + 100 + 200, then the 400 ms cap for the remaining six pauses.
        assert_eq!(RetryPolicy::new(11, Duration::ZERO).deadline, Duration::from_millis(375 + 6 * 400));
        assert_eq!(
            RetryPolicy::new(u32::MAX, Duration::ZERO).deadline,
            Duration::from_millis(375 + 400 * (u64::from(u32::MAX) - 5))
        );
        let huge = RetryPolicy::new(u32::MAX, Duration::MAX);
        assert_eq!(huge.deadline, Duration::MAX, "saturates instead of overflowing");
    }

    #[test]
    fn call_deadline_is_start_plus_deadline_without_overflow() {
        let t0 = Instant::now();
        let p = RetryPolicy::new(2, Duration::from_millis(100));
        assert_eq!(p.call_deadline(t0), t0 + Duration::from_millis(225));
        let endless = RetryPolicy { deadline: Duration::MAX, ..p };
        assert_eq!(endless.call_deadline(t0), t0 + FAR_FUTURE);
    }

    #[test]
    fn attempt_deadline_never_outlives_the_call() {
        let p = RetryPolicy::new(3, Duration::from_millis(100));
        let t0 = Instant::now();
        let call_deadline = t0 + Duration::from_millis(250);
        assert_eq!(p.attempt_deadline(t0, call_deadline), Some(t0 + Duration::from_millis(100)));
        let late = t0 + Duration::from_millis(200);
        assert_eq!(p.attempt_deadline(late, call_deadline), Some(call_deadline));
        assert_eq!(p.attempt_deadline(call_deadline, call_deadline), None);
        assert_eq!(p.attempt_deadline(call_deadline + Duration::from_millis(1), call_deadline), None);
        let endless = RetryPolicy::new(1, Duration::MAX);
        assert_eq!(endless.attempt_deadline(t0, call_deadline), Some(call_deadline), "no overflow");
    }

    #[test]
    fn pauses_stop_at_the_last_attempt_and_before_the_deadline() {
        let p = RetryPolicy::new(3, Duration::from_millis(100));
        let t0 = Instant::now();
        let call_deadline = t0 + p.deadline;
        assert_eq!(p.pause_before(1, t0, call_deadline), Some(Duration::from_millis(25)));
        assert_eq!(p.pause_before(2, t0, call_deadline), Some(Duration::from_millis(50)));
        assert_eq!(p.pause_before(3, t0, call_deadline), None, "three attempts, no fourth");
        // 50 ms pause from 10 ms before the deadline would leave no time.
        assert_eq!(p.pause_before(2, call_deadline - Duration::from_millis(10), call_deadline), None);
        assert_eq!(p.pause_before(2, call_deadline - Duration::from_millis(50), call_deadline), None);
        assert_eq!(
            p.pause_before(2, call_deadline - Duration::from_millis(51), call_deadline),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn attempts_start_at_the_last_answering_coordinator_and_wrap() {
        let order: Vec<usize> = (0..4).map(|a| coordinator_for(1, a, 2)).collect();
        assert_eq!(order, vec![1, 0, 1, 0]);
        let order: Vec<usize> = (0..3).map(|a| coordinator_for(2, a, 3)).collect();
        assert_eq!(order, vec![2, 0, 1]);
    }

    #[test]
    fn giving_up_names_every_coordinator_tried() {
        let failures = vec![
            AttemptFailure::new("10.0.0.1:1", &connect_error()),
            AttemptFailure::new("10.0.0.2:2", &Status::unavailable("no live replica")),
        ];
        let err = give_up(&failures, Stop::Exhausted);
        let ClientError::Unavailable(message) = err else { panic!("expected Unavailable, got {err:?}") };
        assert_eq!(
            message,
            "no coordinator could serve the call; tried 10.0.0.1:1 (Connection refused), 10.0.0.2:2 (no live replica)"
        );
    }

    #[test]
    fn giving_up_says_why_an_update_was_not_retried() {
        let failures = vec![AttemptFailure::new("a:1", &transport_error())];
        let err = give_up(&failures, Stop::Unsafe(CallKind::CompareAndSet));
        let ClientError::Unavailable(message) = err else { panic!("expected Unavailable, got {err:?}") };
        assert!(message.ends_with("not retried: the update may already have been applied"), "{message}");
        assert!(message.contains("a:1 (connection reset)"), "{message}");
    }

    #[test]
    fn giving_up_after_only_timeouts_is_deadline_exceeded() {
        let timeout = Status::deadline_exceeded("attempt deadline");
        let failures = vec![AttemptFailure::new("a:1", &timeout), AttemptFailure::new("b:2", &timeout)];
        assert!(matches!(give_up(&failures, Stop::Deadline), ClientError::DeadlineExceeded));
        let mixed = vec![AttemptFailure::new("a:1", &timeout), AttemptFailure::new("b:2", &connect_error())];
        assert!(matches!(give_up(&mixed, Stop::Deadline), ClientError::Unavailable(_)));
    }

    #[test]
    fn describe_adds_the_root_cause_once() {
        assert_eq!(describe(&connect_error()), "Connection refused");
        assert_eq!(describe(&Status::unavailable("")), "Unavailable");
        let wrapped = Status::from_error(Box::new(ConnectError(Box::new(io::Error::other("deep cause")))));
        assert_eq!(describe(&wrapped), "deep cause");
    }
}
