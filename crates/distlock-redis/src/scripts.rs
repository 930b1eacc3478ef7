//! The Lua scripts, each sent as EVALSHA (redis-rs reloads it on NOSCRIPT).

use std::sync::OnceLock;

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// Every script distlock runs.
pub(crate) struct Scripts {
    /// Try, enqueue, refresh a waiter entry, or claim a hand-off.
    pub acquire: Script,
    /// Compare-and-extend.
    pub extend: Script,
    /// Compare-and-delete of a holder or waiter, then hand-off.
    pub release: Script,
    /// Removes every holder (operators).
    pub force: Script,
    /// Reads holders and waiters.
    pub inspect: Script,
    /// Raises the token counter to at least ARGV[1] (Redlock).
    pub fence: Script,
    /// Returns 1: checks at connect time that the user may run scripts.
    pub probe: Script,
}

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// The scripts, built once per process.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        acquire: with_prelude(include_str!("lua/acquire.lua")),
        extend: with_prelude(include_str!("lua/extend.lua")),
        release: with_prelude(include_str!("lua/release.lua")),
        force: with_prelude(include_str!("lua/force.lua")),
        inspect: with_prelude(include_str!("lua/inspect.lua")),
        fence: Script::new(
            "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') \
             if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'PX', 604800000) end \
             return 1",
        ),
        probe: Script::new("return 1"),
    })
}
