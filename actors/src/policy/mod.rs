//! The PolicyEnforcer actor: owns the Casbin enforcer and decides every request.
//!
//! The model and the policy lines come from files (`config/rbac_model.conf`,
//! `config/policy.csv`); the memberships (`g, user, role, org`) come from the
//! [`MemberStore`]. A reload builds a whole new enforcer and swaps it in only when it
//! loaded, so a bad policy leaves the old one in force and no request sees half of one.
//!
//! Here: the messages and the actor. Beside it: `load.rs` (the model's request fields,
//! the lines checked and sorted by org into the enforcers, the matcher functions).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use casbin::CoreApi;
use serde::Serialize;

use crate::store::{MemberStore, PolicyStore, StoreError};

mod load;
#[cfg(test)]
mod tests;

use load::{arguments, load, Enforcers};
pub use load::{object_match, verb_match};

/// Why a policy could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The model or the policy does not parse.
    #[error("policy does not load: {0}")]
    Invalid(String),
    /// The member store could not be read.
    #[error(transparent)]
    Members(#[from] StoreError),
}

/// Where the policy comes from.
#[derive(Clone)]
pub struct PolicySources {
    /// The Casbin model (`rbac_model.conf`).
    pub model: ModelSource,
    /// The policy lines (`policy.csv`, or PostgreSQL).
    pub policy: Arc<dyn PolicyStore>,
    /// The memberships.
    pub members: Arc<dyn MemberStore>,
    /// Subjects allowed everything in every org (global administrators).
    pub global_admins: Vec<String>,
}

/// Where the Casbin model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A file, read again at every reload.
    File(PathBuf),
    /// Text given at start (kubegate's embedded model), the same at every reload.
    Text {
        /// What the errors call it.
        name: String,
        /// The model.
        text: String,
    },
}

impl ModelSource {
    /// The model's text.
    pub fn read(&self) -> Result<String, PolicyError> {
        match self {
            ModelSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
            ModelSource::Text { text, .. } => Ok(text.clone()),
        }
    }

    /// What the errors call it: the file, or the given name.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Text { name, .. } => name.clone(),
        }
    }
}

/// What a (re)load put in force.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyStats {
    /// `p` lines.
    pub policies: usize,
    /// `g` lines (memberships and role inheritance).
    pub groupings: usize,
    /// Roles named in `p` lines.
    pub roles: Vec<String>,
    /// How long the load took, in milliseconds.
    pub load_ms: f64,
    /// Reloads that put a new policy in force since start.
    pub reloads: u64,
}

/// The answer to [`Authorize`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Why, in words fit for an audit record and a 403 message.
    pub reason: String,
    /// The subject's roles in the org (`admin`, `member`), when allowed: what an
    /// impersonated request tells the API server as the group `kubegate:org:{org}:{role}`.
    /// Shared: a worker hands out copies of the answers it keeps, one per request.
    pub roles: Arc<[String]>,
}

/// Sent by the HTTP layer for every request: may `subject` do `action` on `object` in
/// `org`? Ask with `send(..).timeout(..)`; no answer means deny.
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "Decision")]
pub struct Authorize {
    /// The user (a token's `sub`): the model's request field `sub`.
    pub subject: String,
    /// The org (the Casbin domain): `dom`.
    pub org: u64,
    /// `core:pods`, `apps:deployments/scale`, or a non-resource path: `obj`.
    pub object: String,
    /// The Kubernetes verb: `act`.
    pub action: String,
    /// The namespace, empty when none: `ns`.
    pub namespace: String,
    /// The object's name, empty when none: `name`.
    pub name: String,
    /// The Kubernetes path (or the REST path): `path`.
    pub path: String,
}

/// Sent by the admin endpoint: load model, policy and memberships again.
#[derive(Message)]
#[rtype(result = "Result<PolicyStats, PolicyError>")]
pub struct Reload;

/// Sent by anyone who needs the current figures.
#[derive(Message)]
#[rtype(result = "PolicyStats")]
pub struct Stats;

/// What callers that keep the enforcer's answers must know of the policy in force.
#[derive(Debug, Default)]
pub struct PolicyShape {
    /// Changes whenever a new policy is put in force: answers given before are stale.
    pub generation: AtomicU64,
    /// Whether the model looks at the namespace, the name or the path, so that answers
    /// depend on them too.
    pub detailed: AtomicBool,
}

/// Owns the enforcer.
pub struct PolicyEnforcer {
    shape: Arc<PolicyShape>,
    sources: PolicySources,
    enforcers: Enforcers,
    stats: PolicyStats,
    members_revision: String,
    poll: Duration,
    polling: bool,
}

impl PolicyEnforcer {
    /// Loads the policy; fails when it does not load. `poll` is how often the member
    /// store is checked for changes made by other processes.
    pub async fn load(
        sources: PolicySources,
        poll: Duration,
    ) -> Result<PolicyEnforcer, PolicyError> {
        let (enforcers, stats, members_revision) = load(&sources).await?;
        log::info!(
            "policy loaded: {} rules, {} role bindings",
            stats.policies,
            stats.groupings
        );
        let shape = Arc::new(PolicyShape::default());
        shape.generation.store(1, Ordering::Release);
        shape
            .detailed
            .store(enforcers.is_detailed(), Ordering::Release);
        Ok(PolicyEnforcer {
            shape,
            sources,
            enforcers,
            stats,
            members_revision,
            poll,
            polling: false,
        })
    }

    /// What whoever keeps this enforcer's answers must know: a generation that changes
    /// whenever a new policy is put in force, and which fields answers depend on.
    pub fn shape(&self) -> Arc<PolicyShape> {
        self.shape.clone()
    }

    /// Decides one question, on the calling thread (the actor's handler, and benchmarks).
    pub fn decide(&self, msg: &Authorize) -> Decision {
        if self.sources.global_admins.contains(&msg.subject) {
            return Decision {
                allowed: true,
                reason: "allowed: global administrator".into(),
                roles: self.roles(msg).into(),
            };
        }
        let org = msg.org.to_string();
        match self
            .enforcers
            .for_org(msg.org)
            .enforce(arguments(&self.enforcers.fields, msg, &org))
        {
            Ok(true) => Decision {
                allowed: true,
                reason: "allowed by policy".into(),
                roles: self.roles(msg).into(),
            },
            Ok(false) => Decision {
                allowed: false,
                reason: format!(
                    "user \"{}\" may not {} {} in org {}",
                    msg.subject, msg.action, msg.object, msg.org
                ),
                roles: Arc::default(),
            },
            Err(e) => {
                log::error!("policy evaluation failed, denying: {e}");
                Decision {
                    allowed: false,
                    reason: format!("policy evaluation failed: {e}"),
                    roles: Arc::default(),
                }
            }
        }
    }

    /// The subject's own roles in the org (memberships, not what roles inherit).
    fn roles(&self, msg: &Authorize) -> Vec<String> {
        let mut roles = self
            .enforcers
            .for_org(msg.org)
            .get_role_manager()
            .read()
            .get_roles(&msg.subject, Some(&msg.org.to_string()));
        roles.sort();
        roles.dedup();
        roles
    }

    /// What the current policy holds.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// Reloads in the background and swaps the result in; the old enforcer keeps
    /// answering meanwhile.
    fn reload(&mut self) -> ResponseActFuture<Self, Result<PolicyStats, PolicyError>> {
        let sources = self.sources.clone();
        Box::pin(
            async move { load(&sources).await }
                .into_actor(self)
                .map(|result, act, _| {
                    let (enforcers, stats, revision) = result.inspect_err(|e| {
                        log::error!("policy reload refused, old policy stays: {e}")
                    })?;
                    act.shape
                        .detailed
                        .store(enforcers.is_detailed(), Ordering::Release);
                    act.enforcers = enforcers;
                    let mut stats = stats;
                    stats.reloads = act.stats.reloads + 1;
                    act.stats = stats.clone();
                    act.shape.generation.fetch_add(1, Ordering::AcqRel);
                    act.members_revision = revision;
                    log::info!(
                        "policy reloaded: {} rules, {} role bindings",
                        stats.policies,
                        stats.groupings
                    );
                    Ok(stats)
                }),
        )
    }

    fn check_members(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let members = self.sources.members.clone();
        let check = async move { members.revision().await };
        ctx.spawn(check.into_actor(self).then(|revision, act, _| {
            let changed = matches!(&revision, Ok(r) if *r != act.members_revision);
            let reload = if changed { Some(act.reload()) } else { None };
            async {}.into_actor(act).then(move |_, act, _| {
                let fut: ResponseActFuture<Self, ()> = match reload {
                    Some(reload) => {
                        Box::pin(reload.map(|_, act: &mut Self, _| act.polling = false))
                    }
                    None => {
                        act.polling = false;
                        Box::pin(async {}.into_actor(act))
                    }
                };
                fut
            })
        }));
    }
}

impl Actor for PolicyEnforcer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        if !self.poll.is_zero() {
            ctx.run_interval(self.poll, |act, ctx| act.check_members(ctx));
        }
    }
}

impl Handler<Authorize> for PolicyEnforcer {
    type Result = MessageResult<Authorize>;

    fn handle(&mut self, msg: Authorize, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.decide(&msg))
    }
}

impl Handler<Reload> for PolicyEnforcer {
    type Result = ResponseActFuture<Self, Result<PolicyStats, PolicyError>>;

    fn handle(&mut self, _: Reload, _: &mut Self::Context) -> Self::Result {
        let policy = self.sources.policy.clone();
        Box::pin(self.reload().then(move |result, act, _| {
            async move {
                if result.is_ok() {
                    // other replicas reload when they see the store's revision change
                    if let Err(e) = policy.announce_reload().await {
                        log::warn!("could not tell other replicas about the reload: {e}");
                    }
                }
                result
            }
            .into_actor(act)
        }))
    }
}

impl Handler<Stats> for PolicyEnforcer {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats.clone())
    }
}
