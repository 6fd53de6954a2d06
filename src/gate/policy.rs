//! The policy question: the PolicyEnforcer's answer, or this worker's copy of it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use actix::MailboxError;
use kubegate_actors::policy::{Authorize, Decision};

use super::Gate;
use crate::status::StatusError;

/// Subject, org, object, verb, and namespace, name and path when the model uses them.
type Asked = (String, u64, String, String, String, String, String);

thread_local! {
    /// This worker's copy of the PolicyEnforcer's recent answers, each with the policy
    /// generation it was given under: an answer is used only while no new policy has
    /// been put in force since. It saves a round trip to the actor's thread per request.
    static ANSWERS: RefCell<HashMap<Asked, (u64, Decision)>> = RefCell::new(HashMap::new());
}

/// Most answers a worker keeps; past it, it starts over.
const MAX_ANSWERS: usize = 65_536;

impl Gate {
    /// Asks the PolicyEnforcer, with the configured timeout, unless this worker has its
    /// answer to the same question under the policy in force. No answer in time, or no
    /// enforcer, is a deny: the error is a 503 that says so.
    pub async fn decide(&self, ask: Authorize) -> Result<Decision, StatusError> {
        // read before asking: an answer given while a reload happens is filed under the
        // old generation, and so never used
        let generation = self.policy_shape.generation.load(Ordering::Acquire);
        let detailed = self.policy_shape.detailed.load(Ordering::Acquire);
        let detail = |s: &String| if detailed { s.clone() } else { String::new() };
        let asked = (
            ask.subject.clone(),
            ask.org,
            ask.object.clone(),
            ask.action.clone(),
            detail(&ask.namespace),
            detail(&ask.name),
            detail(&ask.path),
        );
        let known = ANSWERS.with(|answers| {
            answers
                .borrow()
                .get(&asked)
                .filter(|(given, _)| *given == generation)
                .map(|(_, decision)| decision.clone())
        });
        if let Some(decision) = known {
            return Ok(decision);
        }
        let decision = self.ask_enforcer(ask).await?;
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
