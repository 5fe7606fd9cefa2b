//! What can go wrong in the sandbox, as one typed error whose messages
//! name the limit (and its TOML key) that was exceeded or what is wrong
//! with the component.

/// A sandbox failure. Messages name the limit (and its TOML key) that was
/// exceeded, or what is wrong with the component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0}")]
    InvalidComponent(String),
    /// The component imports interfaces policies may not use: every one
    /// of them is listed.
    #[error(
        "the component imports {}; policies may import only wasi:io, wasi:cli, wasi:random/insecure-seed and strata:policy interfaces (no filesystem, sockets, clocks or random bytes; build Python with `componentize-py … --stub-wasi` and JavaScript with `jco componentize … -d stdio random clocks http fetch-event`)",
        .imports.iter().map(|import| format!("`{import}`")).collect::<Vec<_>>().join(", ")
    )]
    ForbiddenImport {
        /// Every refused import, full name, in the component's order.
        imports: Vec<String>,
    },
    /// The component does not implement the world its policy kind needs.
    #[error("the component does not implement the `{world}` world of strata:policy@0.1.0: {reason}")]
    WrongWorld {
        /// The expected world.
        world: &'static str,
        /// What did not match.
        reason: String,
    },
    /// The call ran past its deadline and was interrupted.
    #[error("exceeded its deadline of {deadline_ms} ms (limits.deadline_ms)")]
    DeadlineExceeded {
        /// The deadline.
        deadline_ms: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("tried to grow its memory to {requested_bytes} bytes, over limits.memory_bytes_max = {memory_bytes_max}")]
    MemoryLimitExceeded {
        /// The cap.
        memory_bytes_max: u64,
        /// What the guest asked for.
        requested_bytes: u64,
    },
    /// The guest ran out of fuel.
    #[error("ran out of fuel (limits.fuel = {fuel})")]
    FuelExhausted {
        /// The fuel it was given.
        fuel: u64,
    },
    /// The guest overflowed its stack.
    #[error("overflowed its stack ({stack_bytes_max} bytes)")]
    StackOverflow {
        /// The stack size.
        stack_bytes_max: usize,
    },
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, exit).
    #[error("trapped: {0}")]
    Trap(String),
    /// The answer was larger than a limit allows.
    #[error("returned {actual} {what}, over limits.{limit} = {maximum}")]
    OutputTooLarge {
        /// What was counted: "decisions", "bytes of output", "results".
        what: &'static str,
        /// The TOML key of the limit.
        limit: &'static str,
        /// The limit.
        maximum: u64,
        /// What the guest returned.
        actual: u64,
    },
    /// The answer breaks the contract in a way that cannot be represented
    /// as decisions: it refers to a partition, reason, key or record that
    /// does not exist.
    #[error("broke the contract: {0}")]
    BrokenContract(String),
    /// The engine itself failed (never the guest's fault).
    #[error("sandbox: {0}")]
    Internal(String),
}

impl SandboxError {
    /// True for failures caused by a per-policy limit (deadline, memory,
    /// fuel, stack, output size).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            SandboxError::DeadlineExceeded { .. }
                | SandboxError::MemoryLimitExceeded { .. }
                | SandboxError::FuelExhausted { .. }
                | SandboxError::StackOverflow { .. }
                | SandboxError::OutputTooLarge { .. }
        )
    }

    /// True when the component itself was refused (it never ran).
    pub fn is_invalid_component(&self) -> bool {
        matches!(
            self,
            SandboxError::InvalidComponent(_) | SandboxError::ForbiddenImport { .. } | SandboxError::WrongWorld { .. }
        )
    }
}

pub(super) type Result<T, E = SandboxError> = std::result::Result<T, E>;
