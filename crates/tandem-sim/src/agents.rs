//! Simulated resource agents: start, stop and monitor take simulated time
//! and fail or hang as the seed says, and record into the world when a
//! service really starts and really ends. A crashed machine's agents never
//! answer again (their actions hang for good, touching nothing).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tandem_agents::{Action, Env, Outcome, SimulatedAction, SimulatedAgents};
use tandem_core::spec::ResourceSpec;

use crate::Shared;

/// How the seed makes agents misbehave (per mille of actions).
#[derive(Debug, Clone, Default)]
pub struct AgentFaults {
    /// Starts that take up to 80% of their timeout.
    pub slow_start_pm: u32,
    /// Starts that fail (the service exits at once).
    pub failing_start_pm: u32,
    /// Starts that hang past their timeout (killed, `TimedOut`).
    pub hanging_start_pm: u32,
    /// Stops that take up to 80% of their timeout.
    pub slow_stop_pm: u32,
    /// Stops that fail (the service keeps running).
    pub failing_stop_pm: u32,
    /// Stops that hang past their timeout (the service keeps running).
    pub hanging_stop_pm: u32,
}

/// One node incarnation's agents.
pub struct SimAgents {
    pub shared: Arc<Shared>,
    pub node: usize,
    pub incarnation: u64,
}

enum Fate {
    Done(Duration),
    Fails(Duration),
    Hangs,
}

impl SimulatedAgents for SimAgents {
    fn run(&self, _spec: &ResourceSpec, action: Action, env: &Env, timeout: Duration) -> SimulatedAction {
        let shared = self.shared.clone();
        let (node, incarnation) = (self.node, self.incarnation);
        let group = env.group.clone();
        let epoch = env.epoch;
        Box::pin(async move {
            let planned = {
                let mut s = shared.lock();
                if !s.alive(node, incarnation) {
                    None
                } else {
                    let f = s.agent_faults.clone();
                    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(2);
                    let mut roll = |pm: u32| pm > 0 && s.rng.gen_range(0..1000) < pm;
                    let (hangs, fails, slow_start, slow_stop) = (
                        roll(f.hanging_start_pm),
                        roll(f.failing_start_pm),
                        roll(f.slow_start_pm),
                        roll(f.slow_stop_pm),
                    );
                    let (stop_hangs, stop_fails) = (roll(f.hanging_stop_pm), roll(f.failing_stop_pm));
                    let slow = Duration::from_millis(s.rng.gen_range(1..(timeout_ms * 4 / 5).max(2)));
                    let quick = Duration::from_millis(s.rng.gen_range(10..120));
                    let fate = match action {
                        Action::Start if hangs => Fate::Hangs,
                        Action::Start if fails => Fate::Fails(Duration::from_millis(20)),
                        Action::Start if slow_start => Fate::Done(slow),
                        Action::Stop if stop_hangs => Fate::Hangs,
                        Action::Stop if stop_fails => Fate::Fails(Duration::from_millis(20)),
                        Action::Stop if slow_stop => Fate::Done(slow),
                        Action::Monitor => Fate::Done(Duration::from_millis(2 + quick.as_millis() as u64 % 13)),
                        _ => Fate::Done(quick),
                    };
                    let now = s.now_ms();
                    let name = s.nodes[node].name.clone();
                    let life = if action == Action::Start {
                        let names = s.names();
                        let id = s.world.start_began(&names, node, &group, epoch, now);
                        s.trace
                            .event(now, format!("{name}: start {group} at epoch {epoch} begins"));
                        Some(id)
                    } else {
                        if action == Action::Stop {
                            s.trace.event(now, format!("{name}: stop {group} begins"));
                        }
                        None
                    };
                    Some((fate, life))
                }
            };
            let Some((fate, life)) = planned else {
                return std::future::pending().await;
            };
            let took = match fate {
                Fate::Done(d) | Fate::Fails(d) => d.min(timeout),
                Fate::Hangs => timeout,
            };
            tokio::time::sleep(took).await;
            let done = {
                let mut s = shared.lock();
                if !s.alive(node, incarnation) {
                    None
                } else {
                    let now = s.now_ms();
                    let name = s.nodes[node].name.clone();
                    let outcome = match (action, fate) {
                        (Action::Start, Fate::Done(d)) if d < timeout => Outcome::Ok,
                        (_, Fate::Fails(_)) => Outcome::Failed("exit code 1".into()),
                        (_, Fate::Done(d)) if d >= timeout => Outcome::TimedOut,
                        (_, Fate::Hangs) => Outcome::TimedOut,
                        (Action::Stop, _) => Outcome::Ok,
                        (Action::Monitor, _) if s.world.running(node, &group) => Outcome::Ok,
                        (Action::Monitor, _) => Outcome::NotRunning,
                        (Action::Start, _) => Outcome::Ok,
                    };
                    match action {
                        Action::Start => {
                            if let Some(id) = life {
                                s.world.start_ended(node, &group, id, outcome == Outcome::Ok);
                            }
                            s.trace
                                .event(now, format!("{name}: start {group} at epoch {epoch}: {outcome}"));
                        }
                        Action::Stop => {
                            if outcome == Outcome::Ok {
                                s.world.stopped(node, &group);
                            }
                            s.trace.event(now, format!("{name}: stop {group}: {outcome}"));
                        }
                        Action::Monitor => {}
                    }
                    Some(outcome)
                }
            };
            match done {
                Some(outcome) => outcome,
                None => std::future::pending().await,
            }
        })
    }

    fn kill(&self, _spec: &ResourceSpec, env: &Env) -> Option<i32> {
        let mut s = self.shared.lock();
        if !s.alive(self.node, self.incarnation) {
            return None;
        }
        let now = s.now_ms();
        let name = s.nodes[self.node].name.clone();
        let killed = s.world.kill(self.node, &env.group);
        if killed {
            s.trace.event(now, format!("{name}: lease guard killed {}", env.group));
        }
        killed.then_some(4242)
    }
}
