//! The PolicyEnforcer actor: owns the Casbin enforcer and decides every request.
//!
//! The model and the policy lines come from files (`config/rbac_model.conf`,
//! `config/policy.csv`); the memberships (`g, user, role, org`) come from the
//! [`MemberStore`]. A reload builds a whole new enforcer and swaps it in only when it
//! loaded, so a bad policy leaves the old one in force and no request sees half of one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CachedApi, CachedEnforcer, CoreApi, DefaultModel, StringAdapter};
use serde::Serialize;
use std::collections::HashMap;

use crate::store::{MemberStore, PolicyStore, StoreError};

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
    pub model: PathBuf,
    /// The policy lines (`policy.csv`, or PostgreSQL).
    pub policy: Arc<dyn PolicyStore>,
    /// The memberships.
    pub members: Arc<dyn MemberStore>,
    /// Subjects allowed everything in every org (global administrators).
    pub global_admins: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Why, in words fit for an audit record and a 403 message.
    pub reason: String,
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

/// A request field a model may declare in `[request_definition]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestField {
    Sub,
    Dom,
    Obj,
    Act,
    Ns,
    Name,
    Path,
}

/// The request fields of `model`, in order.
fn request_fields(model: &str) -> Result<Vec<RequestField>, String> {
    let definition = model
        .lines()
        .find_map(|line| {
            let (name, fields) = line.split_once('=')?;
            (name.trim() == "r").then_some(fields)
        })
        .ok_or("the model has no request definition (r = ...)")?;
    definition
        .split(',')
        .map(str::trim)
        .map(|field| match field {
            "sub" => Ok(RequestField::Sub),
            "dom" => Ok(RequestField::Dom),
            "obj" => Ok(RequestField::Obj),
            "act" => Ok(RequestField::Act),
            "ns" => Ok(RequestField::Ns),
            "name" => Ok(RequestField::Name),
            "path" => Ok(RequestField::Path),
            other => Err(format!(
                "the request field \"{other}\" is not one kubegate provides (sub, dom, obj, act, ns, name, path)"
            )),
        })
        .collect()
}

/// What callers that keep the enforcer's answers must know of the policy in force.
#[derive(Debug, Default)]
pub struct PolicyShape {
    /// Changes whenever a new policy is put in force: answers given before are stale.
    pub generation: AtomicU64,
    /// Whether the model looks at the namespace, the name or the path, so that answers
    /// depend on them too.
    pub detailed: AtomicBool,
}

/// Sent by the admin endpoint: load model, policy and memberships again.
#[derive(Message)]
#[rtype(result = "Result<PolicyStats, PolicyError>")]
pub struct Reload;

/// Sent by anyone who needs the current figures.
#[derive(Message)]
#[rtype(result = "PolicyStats")]
pub struct Stats;

/// Owns the enforcer.
pub struct PolicyEnforcer {
    shape: Arc<PolicyShape>,
    fields: Vec<RequestField>,
    sources: PolicySources,
    enforcers: Enforcers,
    stats: PolicyStats,
    members_revision: String,
    poll: Duration,
    polling: bool,
}

/// The Casbin enforcers in force. With a model whose policies name a domain (`dom`),
/// one enforcer per org holds only the lines that can decide questions about that org:
/// its own and those for every org (`*`). Casbin evaluates every line of an enforcer for
/// a question it has not cached, so with 10,000 lines over 100 orgs a new question costs
/// about a hundred evaluations instead of ten thousand. Orgs without lines of their own
/// share `rest`. With any other model, `rest` alone holds everything.
pub struct Enforcers {
    by_org: HashMap<u64, CachedEnforcer>,
    rest: CachedEnforcer,
    fields: Vec<RequestField>,
}

impl Enforcers {
    fn for_org(&self, org: u64) -> &CachedEnforcer {
        self.by_org.get(&org).unwrap_or(&self.rest)
    }

    fn is_detailed(&self) -> bool {
        self.fields.iter().any(|f| {
            matches!(
                f,
                RequestField::Ns | RequestField::Name | RequestField::Path
            )
        })
    }
}

/// Which CSV field of a `p` line (counting the type as 0) is the domain, if any.
fn domain_field(model: &str) -> Option<usize> {
    let p = model.lines().find_map(|line| {
        let (name, fields) = line.split_once('=')?;
        (name.trim() == "p").then(|| {
            fields
                .split(',')
                .map(str::trim)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
    })?;
    let g_has_domain = field_counts(model)
        .iter()
        .any(|(name, n)| name == "g" && *n == 3);
    let at = p.iter().position(|f| f == "dom")?;
    g_has_domain.then_some(at + 1)
}

fn org_of(domain: &str) -> Option<u64> {
    domain
        .parse()
        .ok()
        .filter(|_| domain.bytes().all(|b| b.is_ascii_digit()))
}

async fn build_enforcer(
    model: &DefaultModel,
    text: String,
    capacity: usize,
    sources: &PolicySources,
    fields: &[RequestField],
) -> Result<CachedEnforcer, PolicyError> {
    let mut enforcer = CachedEnforcer::new(model.clone(), StringAdapter::new(text))
        .await
        .map_err(|e| PolicyError::Invalid(format!("policy {}: {e}", sources.policy.describe())))?;
    enforcer.enable_auto_save(false);
    enforcer.add_function("objectMatch", OperatorFunction::Arg2(object_match_fn));
    enforcer.add_function("verbMatch", OperatorFunction::Arg2(verb_match_fn));
    enforcer.set_cache(Box::new(casbin::DefaultCache::new(capacity)));
    // role inheritance for every org: `g, auditor, member, *`
    enforcer
        .get_role_manager()
        .write()
        .matching_fn(None, Some(domain_match));
    enforcer
        .build_role_links()
        .map_err(|e| PolicyError::Invalid(format!("policy {}: {e}", sources.policy.describe())))?;
    // Evaluate once so that a matcher that does not compile fails here, not per request.
    let probe = Authorize {
        subject: "kubegate:probe".into(),
        object: "/".into(),
        action: "get".into(),
        path: "/".into(),
        ..Default::default()
    };
    enforcer
        .enforce(arguments(fields, &probe, "0"))
        .map_err(|e| PolicyError::Invalid(format!("model {}: {e}", sources.model.display())))?;
    Ok(enforcer)
}

/// The question's values in the order of the model's request fields.
fn arguments<'a>(fields: &[RequestField], ask: &'a Authorize, org: &'a str) -> Vec<&'a str> {
    fields
        .iter()
        .map(|field| match field {
            RequestField::Sub => ask.subject.as_str(),
            RequestField::Dom => org,
            RequestField::Obj => ask.object.as_str(),
            RequestField::Act => ask.action.as_str(),
            RequestField::Ns => ask.namespace.as_str(),
            RequestField::Name => ask.name.as_str(),
            RequestField::Path => ask.path.as_str(),
        })
        .collect()
}

/// Reads model, policy and memberships and builds the enforcers from them.
async fn load(sources: &PolicySources) -> Result<(Enforcers, PolicyStats, String), PolicyError> {
    let started = Instant::now();
    let model_text = std::fs::read_to_string(&sources.model).map_err(|e| PolicyError::Read {
        path: sources.model.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut policy_text = sources
        .policy
        .policy_text()
        .await
        .map_err(|e| PolicyError::Read {
            path: sources.policy.describe(),
            reason: e.to_string(),
        })?;
    check_lines(&model_text, &policy_text, &sources.policy.describe())?;
    let revision = sources.members.revision().await?;
    let members = sources.members.all().await?;
    if !policy_text.ends_with('\n') {
        policy_text.push('\n');
    }
    for m in &members {
        policy_text.push_str(&format!("g, {}, {}, {}\n", m.user, m.role, m.org));
    }
    let model = DefaultModel::from_str(&model_text)
        .await
        .map_err(|e| PolicyError::Invalid(format!("model {}: {e}", sources.model.display())))?;
    let fields = request_fields(&model_text)
        .map_err(|e| PolicyError::Invalid(format!("model {}: {e}", sources.model.display())))?;

    // sort the lines by the org they are about
    let (mut shared, mut by_org) = (String::new(), HashMap::<u64, String>::new());
    let (mut policies, mut groupings, mut roles) = (0, 0, Vec::new());
    let domain_at = domain_field(&model_text);
    for line in policy_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let domain = match fields[0] {
            "p" => {
                policies += 1;
                roles.push(fields.get(1).copied().unwrap_or_default().to_string());
                domain_at.and_then(|at| fields.get(at))
            }
            "g" => {
                groupings += 1;
                domain_at.and_then(|_| fields.get(3))
            }
            _ => None,
        };
        match domain.and_then(|d| org_of(d)) {
            Some(org) => {
                let text = by_org.entry(org).or_default();
                text.push_str(line);
                text.push('\n');
            }
            None => {
                shared.push_str(line);
                shared.push('\n');
            }
        }
    }
    let mut enforcers = Enforcers {
        by_org: HashMap::with_capacity(by_org.len()),
        rest: build_enforcer(&model, shared.clone(), 10_000, sources, &fields).await?,
        fields,
    };
    for (org, text) in by_org {
        let enforcer = build_enforcer(
            &model,
            format!("{shared}{text}"),
            20_000,
            sources,
            &enforcers.fields,
        )
        .await?;
        enforcers.by_org.insert(org, enforcer);
    }
    roles.sort();
    roles.dedup();
    let stats = PolicyStats {
        policies,
        groupings,
        roles,
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
        reloads: 0,
    };
    Ok((enforcers, stats, revision))
}

/// The number of fields of each policy type (`p`, `g`...) the model defines.
fn field_counts(model: &str) -> Vec<(String, usize)> {
    model
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.split_once('=')?;
            let name = name.trim();
            let is_type = (name.starts_with('p') || name.starts_with('g'))
                && name.len() <= 3
                && name.chars().all(|c| c.is_ascii_alphanumeric());
            is_type.then(|| (name.to_string(), fields.split(',').count()))
        })
        .collect()
}

/// Checks every policy line against the model before Casbin sees it, so that a mistake
/// is reported with its line number.
fn check_lines(model: &str, policy: &str, path: &str) -> Result<(), PolicyError> {
    let counts = field_counts(model);
    for (n, line) in policy.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad =
            |why: String| PolicyError::Invalid(format!("{path} line {}: {why}: {line}", n + 1));
        let Some((_, want)) = counts.iter().find(|(name, _)| name == fields[0]) else {
            return Err(bad(format!(
                "\"{}\" is not a policy type of the model",
                fields[0]
            )));
        };
        if fields.len() - 1 != *want {
            return Err(bad(format!(
                "{} fields where the model defines {want}",
                fields.len() - 1
            )));
        }
        if fields.iter().any(|f| f.is_empty()) {
            return Err(bad("an empty field".to_string()));
        }
        if fields[0] == "p" {
            if let Some(eft) = fields.last().filter(|_| *want == 5) {
                if *eft != "allow" && *eft != "deny" {
                    return Err(bad(format!(
                        "the effect \"{eft}\" is neither allow nor deny"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `objectMatch(object, pattern)`: `*` in the pattern matches any run of characters
/// (`/` and `:` included); everything else is literal. `*` alone matches every object.
pub fn object_match(object: &str, pattern: &str) -> bool {
    let (o, p) = (object.as_bytes(), pattern.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < o.len() {
        if j < p.len() && p[j] == b'*' {
            star = Some((j, i));
            j += 1;
        } else if j < p.len() && p[j] == o[i] {
            i += 1;
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    p[j..].iter().all(|&c| c == b'*')
}

/// Role links in the domain `*` hold in every org.
fn domain_match(domain: &str, pattern: &str) -> bool {
    domain == pattern || pattern == "*" || domain == "*"
}

/// `verbMatch(verb, pattern)`: the pattern is `*` or verbs separated by `|`.
pub fn verb_match(verb: &str, pattern: &str) -> bool {
    pattern
        .split('|')
        .map(str::trim)
        .any(|v| v == "*" || v == verb)
}

fn object_match_fn(a: Dynamic, b: Dynamic) -> Dynamic {
    Dynamic::from(object_match(&a.to_string(), &b.to_string()))
}

fn verb_match_fn(a: Dynamic, b: Dynamic) -> Dynamic {
    Dynamic::from(verb_match(&a.to_string(), &b.to_string()))
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
            fields: enforcers.fields.clone(),
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
            };
        }
        let org = msg.org.to_string();
        match self
            .enforcers
            .for_org(msg.org)
            .enforce(arguments(&self.fields, msg, &org))
        {
            Ok(true) => Decision {
                allowed: true,
                reason: "allowed by policy".into(),
            },
            Ok(false) => Decision {
                allowed: false,
                reason: format!(
                    "user \"{}\" may not {} {} in org {}",
                    msg.subject, msg.action, msg.object, msg.org
                ),
            },
            Err(e) => {
                log::error!("policy evaluation failed, denying: {e}");
                Decision {
                    allowed: false,
                    reason: format!("policy evaluation failed: {e}"),
                }
            }
        }
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
                    act.fields = enforcers.fields.clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileMemberStore;

    const MODEL: &str = include_str!("../../../config/rbac_model.conf");
    const POLICY: &str = include_str!("../../../config/policy.csv");

    async fn enforcer(dir: &std::path::Path) -> (Addr<PolicyEnforcer>, Arc<FileMemberStore>) {
        std::fs::write(dir.join("model.conf"), MODEL).unwrap();
        std::fs::write(dir.join("policy.csv"), POLICY).unwrap();
        let members = Arc::new(FileMemberStore::new(dir));
        members.set(1, "alice", "admin").await.unwrap();
        members.set(1, "bob", "member").await.unwrap();
        let sources = PolicySources {
            model: dir.join("model.conf"),
            policy: Arc::new(crate::store::FilePolicyStore::new(dir.join("policy.csv"))),
            members: members.clone(),
            global_admins: vec!["root".into()],
        };
        (
            PolicyEnforcer::load(sources, Duration::from_millis(50))
                .await
                .unwrap()
                .start(),
            members,
        )
    }

    async fn may(
        addr: &Addr<PolicyEnforcer>,
        who: &str,
        org: u64,
        object: &str,
        action: &str,
    ) -> bool {
        addr.send(Authorize {
            subject: who.into(),
            org,
            object: object.into(),
            action: action.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .allowed
    }

    #[test]
    fn matchers() {
        assert!(object_match("core:pods", "*"));
        assert!(object_match("/version", "*"));
        assert!(object_match("core:secrets", "*:secrets"));
        assert!(!object_match("core:pods", "*:secrets"));
        assert!(!object_match("core:secretsx", "*:secrets"));
        assert!(object_match("core:secrets/x", "*:secrets/*"));
        assert!(object_match("apps:deployments/scale", "apps:*/scale"));
        assert!(!object_match("core:pods", "core:pod"));
        assert!(verb_match("get", "get|list|watch"));
        assert!(!verb_match("getx", "get|list|watch"));
        assert!(!verb_match("delete", "get|list|watch"));
        assert!(verb_match("connect", "*"));
    }

    #[actix_rt::test]
    async fn default_policy_roles() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _) = enforcer(dir.path()).await;
        for verb in ["get", "list", "watch", "create", "delete", "connect"] {
            assert!(
                may(&addr, "alice", 1, "core:pods", verb).await,
                "admin {verb}"
            );
        }
        assert!(may(&addr, "alice", 1, "core:secrets", "get").await);
        for verb in ["get", "list", "watch"] {
            assert!(
                may(&addr, "bob", 1, "core:pods", verb).await,
                "member {verb}"
            );
            assert!(
                may(&addr, "bob", 1, "/version", verb).await,
                "member {verb} /version"
            );
        }
        for verb in [
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
            "connect",
        ] {
            assert!(
                !may(&addr, "bob", 1, "core:pods", verb).await,
                "member {verb}"
            );
        }
        assert!(!may(&addr, "bob", 1, "core:secrets", "get").await);
        assert!(!may(&addr, "bob", 1, "core:secrets", "list").await);
        assert!(!may(&addr, "bob", 1, "core:pods/exec", "connect").await);
        assert!(!may(&addr, "bob", 1, "core:pods/log", "getx").await);
        // other orgs and strangers
        assert!(!may(&addr, "alice", 2, "core:pods", "get").await);
        assert!(!may(&addr, "mallory", 1, "core:pods", "get").await);
        // a global administrator may do anything anywhere
        assert!(may(&addr, "root", 42, "core:secrets", "delete").await);
    }

    #[actix_rt::test]
    async fn lines_of_one_org_decide_only_for_that_org() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, members) = enforcer(dir.path()).await;
        std::fs::write(
            dir.path().join("policy.csv"),
            format!("{POLICY}p, auditor, 3, core:configmaps, create, allow\np, member, 5, core:secrets, get, allow\ng, auditor, member, *\n"),
        )
        .unwrap();
        members.set(3, "erin", "auditor").await.unwrap();
        members.set(4, "erin", "auditor").await.unwrap();
        members.set(5, "frank", "member").await.unwrap();
        addr.send(Reload).await.unwrap().unwrap();
        assert!(may(&addr, "erin", 3, "core:configmaps", "create").await);
        assert!(!may(&addr, "erin", 3, "core:pods", "delete").await);
        assert!(
            !may(&addr, "erin", 4, "core:configmaps", "create").await,
            "org 3's line says nothing of org 4"
        );
        // auditors are members in every org (`g, auditor, member, *`), denies included
        assert!(may(&addr, "erin", 4, "core:pods", "list").await);
        assert!(!may(&addr, "erin", 4, "core:pods", "delete").await);
        assert!(!may(&addr, "erin", 3, "core:secrets", "get").await);
        // a deny for every org still wins over an org's own allow
        assert!(!may(&addr, "frank", 5, "core:secrets", "get").await);
        assert!(may(&addr, "frank", 5, "core:pods", "list").await);
        // orgs without lines of their own use the shared ones
        assert!(may(&addr, "alice", 1, "core:pods", "delete").await);
        assert!(!may(&addr, "alice", 9, "core:pods", "get").await);
    }

    #[actix_rt::test]
    async fn models_may_match_on_namespace_name_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let model = MODEL
            .replace("r = sub, dom, obj, act", "r = sub, dom, obj, act, ns, path")
            .replace(
                "p = sub, dom, obj, act, eft",
                "p = sub, dom, obj, act, ns, path, eft",
            )
            .replace(
                "verbMatch(r.act, p.act)",
                "verbMatch(r.act, p.act) && objectMatch(r.ns, p.ns) && objectMatch(r.path, p.path)",
            );
        std::fs::write(dir.path().join("model.conf"), model).unwrap();
        std::fs::write(
            dir.path().join("policy.csv"),
            "p, member, *, *, get|list, dev, *, allow\np, member, *, *, get, *, /version, allow\np, member, *, core:pods, get, dev, *-debug, deny\n",
        )
        .unwrap();
        let members = Arc::new(FileMemberStore::new(dir.path()));
        members.set(1, "bob", "member").await.unwrap();
        let sources = PolicySources {
            model: dir.path().join("model.conf"),
            policy: Arc::new(crate::store::FilePolicyStore::new(
                dir.path().join("policy.csv"),
            )),
            members,
            global_admins: vec![],
        };
        let enforcer = PolicyEnforcer::load(sources, Duration::ZERO).await.unwrap();
        assert!(enforcer.shape().detailed.load(Ordering::Acquire));
        let ask = |ns: &str, path: &str, object: &str| Authorize {
            subject: "bob".into(),
            org: 1,
            object: object.into(),
            action: "get".into(),
            namespace: ns.into(),
            path: path.into(),
            ..Default::default()
        };
        assert!(
            enforcer
                .decide(&ask("dev", "/api/v1/namespaces/dev/pods/web", "core:pods"))
                .allowed
        );
        assert!(
            !enforcer
                .decide(&ask(
                    "prod",
                    "/api/v1/namespaces/prod/pods/web",
                    "core:pods"
                ))
                .allowed
        );
        assert!(enforcer.decide(&ask("", "/version", "/version")).allowed);
        assert!(
            !enforcer
                .decide(&ask(
                    "dev",
                    "/api/v1/namespaces/dev/pods/web-debug",
                    "core:pods"
                ))
                .allowed
        );
    }

    #[actix_rt::test]
    async fn membership_changes_are_picked_up_and_bad_policy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, members) = enforcer(dir.path()).await;
        assert!(!may(&addr, "carol", 1, "core:pods", "get").await);
        members.set(1, "carol", "member").await.unwrap();
        let mut seen = false;
        for _ in 0..100 {
            if may(&addr, "carol", 1, "core:pods", "get").await {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            seen,
            "a membership added by another process is seen without a reload"
        );

        let lines = POLICY.lines().count();
        let bad_policies = [
            (
                "p, member, *, *, get\n",
                "4 fields where the model defines 5",
            ),
            (
                "p, member, *, *, get, perhaps\n",
                "the effect \"perhaps\" is neither allow nor deny",
            ),
            ("x, member, *\n", "\"x\" is not a policy type"),
        ];
        for (line, says) in bad_policies {
            std::fs::write(dir.path().join("policy.csv"), format!("{POLICY}{line}")).unwrap();
            let err = addr.send(Reload).await.unwrap().unwrap_err().to_string();
            assert!(
                err.contains(&format!("policy.csv line {}: {says}", lines + 1)),
                "{err}"
            );
        }
        std::fs::write(dir.path().join("policy.csv"), POLICY).unwrap();
        let good = addr.send(Reload).await.unwrap().unwrap();
        assert_eq!(good.policies, 5);

        std::fs::write(
            dir.path().join("model.conf"),
            MODEL.replace(
                "objectMatch(r.obj, p.obj)",
                "objectMatch(r.obj, p.obj) && ((((",
            ),
        )
        .unwrap();
        let err = addr.send(Reload).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("matcher"), "{err}");
        assert!(
            may(&addr, "alice", 1, "core:pods", "delete").await,
            "old policy stays in force"
        );
    }
}
