//! Policy decision speed: 10,000 policy lines, 1,000 users over 100 orgs.
//!
//! Run with `cargo bench --bench policy`. Prints p50/p99/max of one decision made
//! directly on the enforcer (warm Casbin cache, and cold: questions never asked before),
//! through the PolicyEnforcer actor as requests ask it, and the time a (re)load takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use kubegate_actors::policy::{Authorize, ModelSource, PolicyEnforcer, PolicySources};
use kubegate_actors::store::{FileMemberStore, FilePolicyStore, MemberStore};

const ORGS: u64 = 100;
const USERS: u64 = 1_000;
const OBJECTS: [&str; 10] = [
    "core:pods",
    "core:secrets",
    "core:configmaps",
    "core:pods/exec",
    "apps:deployments",
    "core:res1",
    "core:res3",
    "core:res5",
    "/version",
    "core:services/proxy",
];
const VERBS: [&str; 5] = ["get", "list", "watch", "create", "delete"];

/// A small deterministic generator (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    (
        at(0.50),
        at(0.99),
        samples.last().unwrap().as_secs_f64() * 1e6,
    )
}

fn question(rng: &mut Rng) -> Authorize {
    let user = rng.next(USERS);
    // nine questions in ten about the user's own org
    let org = if rng.next(10) == 0 {
        rng.next(ORGS) + 1
    } else {
        user % ORGS + 1
    };
    Authorize {
        subject: format!("user-{user}"),
        org,
        object: OBJECTS[rng.next(OBJECTS.len() as u64) as usize].to_string(),
        action: VERBS[rng.next(VERBS.len() as u64) as usize].to_string(),
        ..Default::default()
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut policy = std::fs::read_to_string(repo.join("config/policy.csv")).unwrap();
    for org in 1..=ORGS {
        for team in 0..10 {
            for res in 0..10 {
                policy.push_str(&format!(
                    "p, team-{team}, {org}, core:res{res}, get|list|watch, allow\n"
                ));
            }
        }
    }
    let lines = policy.lines().filter(|l| l.starts_with("p,")).count();
    std::fs::write(dir.path().join("policy.csv"), &policy).unwrap();
    let members = Arc::new(FileMemberStore::new(dir.path()));

    actix_rt::System::new().block_on(async move {
        for user in 0..USERS {
            let role = match user % 10 {
                0 => "admin".to_string(),
                1..=6 => "member".to_string(),
                n => format!("team-{n}"),
            };
            members.set(user % ORGS + 1, &format!("user-{user}"), &role).await.unwrap();
        }
        let sources = PolicySources {
            model: ModelSource::File(repo.join("config/rbac_model.conf")),
            policy: Arc::new(FilePolicyStore::new(dir.path().join("policy.csv"))),
            members: members.clone(),
            global_admins: vec![],
        };
        let enforcer = PolicyEnforcer::load(sources.clone(), Duration::ZERO).await.unwrap();
        let stats = enforcer.stats().clone();
        println!(
            "policy: {lines} policy lines, {} role bindings, {USERS} users over {ORGS} orgs; load {:.0} ms",
            stats.groupings, stats.load_ms
        );

        // cold: questions never asked before (unique objects), so Casbin evaluates them
        let mut rng = Rng(0x5eed);
        let mut cold = Vec::new();
        for i in 0..200 {
            let mut q = question(&mut rng);
            q.object = format!("{}-cold{i}", q.object);
            let started = Instant::now();
            std::hint::black_box(enforcer.decide(&q));
            cold.push(started.elapsed());
        }

        // warm: every question of the workload asked once, then 200,000 measured
        let mut rng = Rng(0xbeef);
        let workload: Vec<Authorize> = (0..200_000).map(|_| question(&mut rng)).collect();
        for q in &workload {
            enforcer.decide(q);
        }
        let mut warm = Vec::with_capacity(workload.len());
        let mut allowed = 0;
        for q in &workload {
            let started = Instant::now();
            let d = std::hint::black_box(enforcer.decide(q));
            warm.push(started.elapsed());
            allowed += usize::from(d.allowed);
        }

        // through the actor, on its own arbiter, as HTTP workers ask it
        let arbiter = actix::Arbiter::new();
        let addr = PolicyEnforcer::start_in_arbiter(&arbiter.handle(), move |_| enforcer);
        let mut via_actor = Vec::with_capacity(50_000);
        for q in workload.iter().take(50_000) {
            let started = Instant::now();
            std::hint::black_box(addr.send(q.clone()).await.unwrap());
            via_actor.push(started.elapsed());
        }

        println!("{:<34} {:>9} {:>9} {:>9}", "one decision (us)", "p50", "p99", "max");
        for (name, samples) in [
            ("direct, warm cache", warm),
            ("direct, cold (never asked)", cold),
            ("through the actor (send+await)", via_actor),
        ] {
            let (p50, p99, max) = percentiles(samples);
            println!("{name:<34} {p50:>9.2} {p99:>9.2} {max:>9.1}");
        }
        println!("allowed {allowed} of 200000 warm questions");
        let started = Instant::now();
        PolicyEnforcer::load(sources, Duration::ZERO).await.unwrap();
        println!("a reload of the whole policy: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
        println!("target: p99 of one decision under 20 us");
    });
}
