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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use distlock_testkit::redis::RedisServer;

    use super::scripts;
    use crate::keys::{LockKeys, Suffix};

    fn micros_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    }

    /// The acquire script for an exclusive lock on `keys` as owner `owner` (1..=9), waiting
    /// in the queue, with the client's send time `asked`.
    fn waiting_acquire(keys: &LockKeys, owner: u8, asked: u64) -> redis::ScriptInvocation<'static> {
        let mut invocation = scripts().acquire.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation
            .arg(format!("{owner:032x}"))
            .arg("x:1:1")
            .arg(30_000)
            .arg("{}")
            .arg(format!("7fffffff|2|0|{asked}|30000|distlock:notify:test"));
        invocation
    }

    /// Runs [`waiting_acquire`]. Returns whether the lock was held.
    async fn acquire(
        conn: &mut redis::aio::MultiplexedConnection,
        keys: &LockKeys,
        owner: u8,
        asked: u64,
    ) -> bool {
        let (held, _): (i64, i64) = waiting_acquire(keys, owner, asked)
            .invoke_async(conn)
            .await
            .unwrap();
        held > 0
    }

    async fn queue(conn: &mut redis::aio::MultiplexedConnection, keys: &LockKeys) -> Vec<u8> {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.key(Suffix::Queue))
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .unwrap();
        members
            .iter()
            .map(|member| u8::from_str_radix(&member[member.len() - 2..], 16).unwrap())
            .collect()
    }

    /// Waiters take their place by when their clients sent the request, not by when the server
    /// ran it, so requests that a busy server reads in another order keep the order they were
    /// sent in; but never more than 1 ms before the server's clock, nor after it.
    #[tokio::test]
    async fn waiters_are_queued_by_when_they_asked_within_a_millisecond() {
        let server = RedisServer::start();
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        // Run in the order 2, 3 in one round trip, but sent in the order 3, 2: 3 says it
        // asked 900 µs before 2. 3 keeps that place while it runs within 1 ms of `now` (its
        // time is then no earlier than 1 ms before the server's clock, or is raised to that,
        // still before `now`); a machine that stalls longer gets another try on a fresh lock.
        let mut in_window = None;
        for attempt in 0..50 {
            let keys = LockKeys::new(&format!("asked {attempt}"));
            assert!(
                acquire(&mut conn, &keys, 1, micros_now()).await,
                "the holder"
            );
            let now = micros_now();
            let ((held_2, _), (held_3, _)): ((i64, i64), (i64, i64)) = redis::pipe()
                .load_script(&scripts().acquire)
                .ignore()
                .invoke_script(&waiting_acquire(&keys, 2, now))
                .invoke_script(&waiting_acquire(&keys, 3, now - 900))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!((held_2, held_3), (0, 0), "both wait behind the holder");
            if micros_now() - now < 1000 {
                in_window = Some(keys);
                break;
            }
        }
        let keys = in_window.expect("fifty tries, each slower than a millisecond");
        assert_eq!(queue(&mut conn, &keys).await, [3, 2]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A clock 10 s behind gains at most 1 ms: it stays behind those that asked 20 ms ago.
        assert!(!acquire(&mut conn, &keys, 4, micros_now() - 10_000_000).await);
        // A clock 10 s ahead gains nothing.
        assert!(!acquire(&mut conn, &keys, 5, micros_now() + 10_000_000).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!acquire(&mut conn, &keys, 6, micros_now()).await);
        assert_eq!(queue(&mut conn, &keys).await, [3, 2, 4, 5, 6]);
    }
}
