//! The faults, applied by the controller on a seeded schedule.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::clock::now_ns;
use crate::controller::Run;
use crate::events::FaultEvent;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// No fault: the baseline, which must show no anomaly at all.
    None,
    /// SIGSTOP the current holder for longer than its TTL, then SIGCONT.
    Sigstop,
    /// SIGKILL the current holder and start a replacement client.
    Sigkill,
    /// Blackhole the holder's connections to its server (userspace proxy) past its TTL.
    Partition,
    /// Kill the server and start it again at once.
    Restart,
    /// Redlock: kill one master and start it again at once.
    RestartImmediate,
    /// Redlock: kill one master and start it again after TTL + 1 s.
    RestartDelayed,
    /// Cluster: SIGKILL one follower, start it again after TTL + 1 s.
    NodeKill,
    /// Cluster: SIGKILL the leader, start it again after TTL + 1 s (the others elect a new one).
    LeaderKill,
    /// Redlock positive control: one master down while a client wins the other two, then a
    /// clock jump on one of those two (its key deleted) once the third is back empty, so a
    /// second client can win a majority while the first still believes it holds.
    ClockJump,
}

impl Fault {
    /// The label used on the command line and in the report.
    pub fn label(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Sigstop => "sigstop",
            Fault::Sigkill => "sigkill",
            Fault::Partition => "partition",
            Fault::Restart => "restart",
            Fault::RestartImmediate => "restart-immediate",
            Fault::RestartDelayed => "restart-delayed",
            Fault::NodeKill => "node-kill",
            Fault::LeaderKill => "leader-kill",
            Fault::ClockJump => "clock-jump",
        }
    }

    /// Whether clients need proxies for this fault.
    pub fn needs_proxy(self) -> bool {
        self == Fault::Partition
    }

    /// Applies the fault once. Returns what was done, or `None` when there was nothing to hit
    /// (no holder at the moment).
    pub fn apply(self, run: &mut Run, rng: &mut impl Rng) -> Option<FaultEvent> {
        let ttl = run.scenario.ttl;
        let past_ttl = ttl + Duration::from_millis(1000 + rng.random_range(0..500));
        match self {
            Fault::None => None,
            Fault::Sigstop => {
                let (client, token) = run.pause_holder_mid_work(Duration::from_secs(6))?;
                let t = now_ns();
                // Long enough past the TTL that the server has let go and another client has
                // read and written meanwhile: the stopped holder's write is then certainly a
                // lost update (the unfenced positive control).
                std::thread::sleep(past_ttl + Duration::from_millis(1000));
                let _ = run.client(&client)?.resume();
                Some(event(t, "sigstop", Some(client), Some(token)))
            }
            Fault::Sigkill => {
                let (client, token) = run.holder_mid_work()?;
                let t = now_ns();
                run.kill_client(&client);
                let e = event(t, "sigkill", Some(client), Some(token));
                run.spawn_replacement();
                Some(e)
            }
            Fault::Partition => {
                let (client, token) = run.holder_mid_work()?;
                let t = now_ns();
                run.partition(&client, true);
                std::thread::sleep(past_ttl);
                run.partition(&client, false);
                Some(event(t, "partition", Some(client), Some(token)))
            }
            Fault::Restart | Fault::RestartImmediate | Fault::RestartDelayed => {
                let holder = run.current_holder();
                let nodes = run.backend.upstreams().len().max(1);
                let node = rng.random_range(0..nodes);
                let down = if self == Fault::RestartDelayed {
                    past_ttl
                } else {
                    Duration::ZERO
                };
                let t = now_ns();
                run.backend.restart(node, down);
                let (client, token) = holder.unzip();
                Some(event(t, self.label(), client, token))
            }
            Fault::NodeKill | Fault::LeaderKill => {
                let holder = run.current_holder();
                let nodes = run.backend.upstreams().len();
                let leader = run.backend.leader()?;
                let node = if self == Fault::LeaderKill {
                    leader
                } else {
                    // A follower, picked by the seed.
                    let followers: Vec<usize> = (0..nodes).filter(|&n| n != leader).collect();
                    *followers.get(rng.random_range(0..followers.len().max(1)))?
                };
                let t = now_ns();
                run.backend.restart(node, past_ttl);
                let (client, token) = holder.unzip();
                let mut e = event(t, self.label(), client, token);
                e.kind = format!("{}:{node}", self.label());
                Some(e)
            }
            Fault::ClockJump => clock_jump(run),
        }
    }
}

fn event(t: u64, kind: &str, client: Option<String>, token: Option<u64>) -> FaultEvent {
    FaultEvent {
        t,
        t_end: now_ns(),
        kind: kind.to_owned(),
        client,
        token,
    }
}

/// Lua listing the holders of every lock's holder hash (`distlock:{T}:E:l`, docs/redis.md) on one
/// master.
const HOLDERS: &str = "local r={} for _,k in ipairs(redis.call('keys','distlock:*:l')) do \
     for _,f in ipairs(redis.call('hkeys',k)) do r[#r+1]=f end end return table.concat(r,',')";
/// Lua deleting every lock hash on one master: what a forward clock jump does to its keys.
const EXPIRE_ALL: &str = "local n=0 for _,k in ipairs(redis.call('keys','distlock:*:l')) do \
     n=n+redis.call('del',k) end return n";

fn clock_jump(run: &mut Run) -> Option<FaultEvent> {
    let t = now_ns();
    let nodes = run.backend.redis_nodes();
    if nodes.len() < 3 {
        return None;
    }
    let before = nodes[0].command(&["EVAL", HOLDERS, "0"]);
    // Master 3 goes down (SIGKILL, so nothing a client sends it is queued for later, as a
    // SIGSTOP would): the next grant is on masters 1 and 2 only, a bare majority.
    nodes[2].kill();
    let changed = distlock_testkit::wait_until(Duration::from_secs(10), || {
        let now = nodes[0].command(&["EVAL", HOLDERS, "0"]);
        now != before && !now.starts_with("$0")
    });
    // Master 3 comes back empty (no persistence) and the clients reconnect to it.
    nodes[2].restart();
    if !changed {
        return None;
    }
    std::thread::sleep(Duration::from_millis(300));
    // Master 1's clock jumps forward: the holder's key there expires at once. Masters 1 and 3
    // are now free, a majority, while the holder still believes — until its next renewal
    // (ttl/3 after its grant) finds only master 2.
    nodes[0].command(&["EVAL", EXPIRE_ALL, "0"]);
    Some(event(t, "clock-jump", None, None))
}
