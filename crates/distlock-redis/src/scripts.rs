//! The Lua scripts, each sent as EVALSHA and loaded again on NOSCRIPT (see `ScriptCall`).

use std::sync::OnceLock;

use redis::Script;

const KEYS: &str = include_str!("lua/keys.lua");
const GRANT: &str = include_str!("lua/grant.lua");
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

/// `keys.lua`, then `body` with its `--@grant` and `--@prelude` lines replaced by those
/// pieces: a body places them after its fast path, which then runs without them.
fn compose(body: &str) -> Script {
    assert!(
        body.contains("\n--@grant\n") && body.contains("\n--@prelude\n"),
        "a script body must place --@grant and --@prelude"
    );
    let body = body
        .replacen("\n--@grant\n", &format!("\n{GRANT}\n"), 1)
        .replacen("\n--@prelude\n", &format!("\n{PRELUDE}\n"), 1);
    Script::new(&format!("{KEYS}\n{body}"))
}

/// The scripts, built once per process.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        acquire: compose(include_str!("lua/acquire.lua")),
        extend: compose(include_str!("lua/extend.lua")),
        release: compose(include_str!("lua/release.lua")),
        force: compose(include_str!("lua/force.lua")),
        inspect: compose(include_str!("lua/inspect.lua")),
        fence: Script::new(
            "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') \
             if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'PX', 604800000) end \
             return 1",
        ),
        probe: Script::new("return 1"),
    })
}
