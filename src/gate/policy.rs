//! The policy question: the PolicyEnforcer's answer, or this worker's copy of it.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use actix::MailboxError;
use kubegate_actors::policy::{Authorize, Decision};

use super::Gate;
use crate::status::StatusError;

thread_local! {
    /// This worker's copy of the PolicyEnforcer's recent answers, each with the policy
    /// generation it was given under: an answer is used only while no new policy has
    /// been put in force since. It saves a round trip to the actor's thread per request.
    /// Each is filed under its question written as one string ([`question_key`]), so a
    /// question already answered is looked up without a copy of its parts.
    static ANSWERS: RefCell<foldhash::HashMap<Box<str>, (u64, Decision)>> =
        RefCell::new(foldhash::HashMap::default());
    /// Where [`question_key`] writes the question being looked up.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Most answers a worker keeps; past it, it starts over.
const MAX_ANSWERS: usize = 65_536;

/// A policy question with its parts borrowed: what [`Gate::decide`] looks up in this
/// worker's answers. The enforcer's [`Authorize`], with parts of its own, is made only
/// when the answer is not there.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// The user: the model's `sub`.
    pub subject: &'a str,
    /// The org: `dom`.
    pub org: u64,
    /// `core:pods`, `apps:deployments/scale`, `kubegate:clusters`, or a path: `obj`.
    pub object: &'a str,
    /// The verb: `act`.
    pub action: &'a str,
    /// The namespace, empty when none: `ns`.
    pub namespace: &'a str,
    /// The object's name, empty when none: `name`.
    pub name: &'a str,
    /// The Kubernetes path (or the REST path): `path`.
    pub path: &'a str,
}

impl Ask<'_> {
    /// The question as the PolicyEnforcer takes it.
    fn to_message(self) -> Authorize {
        Authorize {
            subject: self.subject.to_string(),
            org: self.org,
            object: self.object.to_string(),
            action: self.action.to_string(),
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            path: self.path.to_string(),
        }
    }
}

/// Writes `ask` to `key` as [`ANSWERS`] files it: org, subject, object and verb, and
/// namespace, name and path when the model uses them (`detailed`), each part after its
/// length, so that no two questions are written alike.
fn question_key(key: &mut String, ask: &Ask<'_>, detailed: bool) {
    // numbers as their bytes, each a char, rather than through the formatting machinery
    fn number(key: &mut String, n: u64) {
        key.extend(n.to_le_bytes().map(char::from));
    }
    key.clear();
    number(key, ask.org);
    let all = [
        ask.subject,
        ask.object,
        ask.action,
        ask.namespace,
        ask.name,
        ask.path,
    ];
    for part in &all[..if detailed { 6 } else { 3 }] {
        number(key, part.len() as u64);
        key.push_str(part);
    }
}

impl Gate {
    /// Asks the PolicyEnforcer, with the configured timeout, unless this worker has its
    /// answer to the same question under the policy in force. No answer in time, or no
    /// enforcer, is a deny: the error is a 503 that says so.
    pub async fn decide(&self, ask: Ask<'_>) -> Result<Decision, StatusError> {
        // read before asking: an answer given while a reload happens is filed under the
        // old generation, and so never used
        let generation = self.policy_shape.generation.load(Ordering::Acquire);
        let detailed = self.policy_shape.detailed.load(Ordering::Acquire);
        // the answer, or the question's key to file the enforcer's answer under
        let known = KEY.with(|key| {
            let mut key = key.borrow_mut();
            question_key(&mut key, &ask, detailed);
            ANSWERS.with(|answers| {
                answers
                    .borrow()
                    .get(key.as_str())
                    .filter(|(given, _)| *given == generation)
                    .map(|(_, decision)| decision.clone())
                    .ok_or_else(|| Box::<str>::from(key.as_str()))
            })
        });
        let asked = match known {
            Ok(decision) => return Ok(decision),
            Err(asked) => asked,
        };
        let decision = self.ask_enforcer(ask.to_message()).await?;
        ANSWERS.with(|answers| {
            let mut answers = answers.borrow_mut();
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
            answers.insert(asked, (generation, decision.clone()));
        });
        Ok(decision)
    }

    async fn ask_enforcer(&self, ask: Authorize) -> Result<Decision, StatusError> {
        self.policy
            .send(ask)
            .timeout(self.decision_timeout)
            .await
            .map_err(|e| {
                let why = match e {
                    MailboxError::Timeout => "did not answer in time",
                    MailboxError::Closed => "is not running",
                };
                log::error!("policy enforcer {why}: request denied");
                StatusError::unavailable(format!(
                    "authorization is unavailable (the policy enforcer {why}); the request was denied"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use actix::{Actor, Context, Handler, ResponseFuture};
    use kubegate_actors::auditor::{AuditCounters, RecordBatch};
    use kubegate_actors::policy::{Authorize, Decision, PolicyShape};

    use super::Ask;

    use crate::config::AuthConfig;
    use crate::gate::revocations::Revocations;
    use crate::gate::tokens::TokenAuthority;
    use crate::gate::{Gate, GateParts};

    /// A policy enforcer that allows everything, after `0`.
    struct Slow(Duration);

    impl Actor for Slow {
        type Context = Context<Self>;
    }

    impl Handler<Authorize> for Slow {
        type Result = ResponseFuture<Decision>;

        fn handle(&mut self, _: Authorize, _: &mut Context<Self>) -> Self::Result {
            let delay = self.0;
            Box::pin(async move {
                actix_rt::time::sleep(delay).await;
                Decision {
                    allowed: true,
                    reason: "allowed".into(),
                    roles: Default::default(),
                }
            })
        }
    }

    /// An auditor that keeps nothing.
    struct Nowhere;

    impl Actor for Nowhere {
        type Context = Context<Self>;
    }

    impl Handler<RecordBatch> for Nowhere {
        type Result = ();

        fn handle(&mut self, _: RecordBatch, _: &mut Context<Self>) {}
    }

    fn gate(answer_after: Duration, decision_timeout: Duration) -> Gate {
        Gate::new(GateParts {
            tokens: Arc::new(TokenAuthority::new(&AuthConfig::default(), &[7; 32])),
            revocations: Arc::new(Revocations::default()),
            policy: Slow(answer_after).start().recipient(),
            policy_shape: Arc::new(PolicyShape::default()),
            decision_timeout,
            global_admins: Vec::new(),
            auditor: crate::gate::audit::AuditTrail::new(Nowhere.start().recipient()),
            audit_counters: Arc::new(AuditCounters::default()),
            pending_audits: Default::default(),
            login_provider: None,
        })
    }

    fn ask(subject: &str) -> Ask<'_> {
        Ask {
            subject,
            org: 1,
            object: "core:pods",
            action: "list",
            ..Default::default()
        }
    }

    /// A decision slower than `policy.decision_timeout` is a deny: a 503 that says so,
    /// and no answer is kept for later.
    #[actix_rt::test]
    async fn a_decision_slower_than_the_timeout_is_a_503_deny() {
        let slow = gate(Duration::from_millis(500), Duration::from_millis(50));
        let started = std::time::Instant::now();
        let e = slow.decide(ask("slow-alice")).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(e.code.as_u16(), 503);
        assert!(
            e.message.contains("did not answer in time"),
            "{}",
            e.message
        );
        assert!(e.message.contains("denied"), "{}", e.message);
        // an answer in time is used
        let quick = gate(Duration::ZERO, Duration::from_millis(500));
        assert!(quick.decide(ask("quick-bob")).await.unwrap().allowed);
    }

    /// Two questions are filed under the same key only when they are the same question:
    /// parts are not run together, and namespace, name and path count only when the
    /// model uses them.
    #[test]
    fn questions_are_filed_apart() {
        let key = |ask: &Ask<'_>, detailed: bool| {
            let mut key = String::new();
            super::question_key(&mut key, ask, detailed);
            key
        };
        let mut a = ask("ab");
        a.object = "c";
        let mut b = ask("a");
        b.object = "bc";
        assert_ne!(key(&a, false), key(&b, false));
        let mut other_org = ask("alice");
        other_org.org = 2;
        assert_ne!(key(&ask("alice"), false), key(&other_org, false));
        let mut named = ask("alice");
        named.namespace = "default";
        named.name = "web";
        assert_eq!(key(&ask("alice"), false), key(&named, false));
        assert_ne!(key(&ask("alice"), true), key(&named, true));
        let mut in_path = ask("alice");
        in_path.path = "default";
        assert_ne!(key(&named, true), key(&in_path, true));
        assert_eq!(key(&named, true), key(&{ named }, true));
    }
}
