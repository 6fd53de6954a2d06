//! Loading a policy: the model's request fields, every line checked against the model,
//! the lines sorted by the org they are about into one Casbin enforcer per org, and the
//! matcher functions kubegate gives the model (`objectMatch`, `verbMatch`).

use std::collections::HashMap;
use std::time::Instant;

use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CachedApi, CachedEnforcer, CoreApi, DefaultModel, StringAdapter};

use super::{Authorize, PolicyError, PolicySources, PolicyStats};

/// A request field a model may declare in `[request_definition]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestField {
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

/// The Casbin enforcers in force. With a model whose policies name a domain (`dom`),
/// one enforcer per org holds only the lines that can decide questions about that org:
/// its own and those for every org (`*`). Casbin evaluates every line of an enforcer for
/// a question it has not cached, so with 10,000 lines over 100 orgs a new question costs
/// about a hundred evaluations instead of ten thousand. Orgs without lines of their own
/// share `rest`. With any other model, `rest` alone holds everything.
pub(super) struct Enforcers {
    by_org: HashMap<u64, CachedEnforcer>,
    rest: CachedEnforcer,
    pub(super) fields: Vec<RequestField>,
}

impl Enforcers {
    pub(super) fn for_org(&self, org: u64) -> &CachedEnforcer {
        self.by_org.get(&org).unwrap_or(&self.rest)
    }

    pub(super) fn is_detailed(&self) -> bool {
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
        .map_err(|e| PolicyError::Invalid(format!("model {}: {e}", sources.model.describe())))?;
    Ok(enforcer)
}

/// The question's values in the order of the model's request fields.
pub(super) fn arguments<'a>(
    fields: &[RequestField],
    ask: &'a Authorize,
    org: &'a str,
) -> Vec<&'a str> {
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
pub(super) async fn load(
    sources: &PolicySources,
) -> Result<(Enforcers, PolicyStats, String), PolicyError> {
    let started = Instant::now();
    let model_text = sources.model.read()?;
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
        .map_err(|e| PolicyError::Invalid(format!("model {}: {e}", sources.model.describe())))?;
    let fields = request_fields(&model_text)
        .map_err(|e| PolicyError::Invalid(format!("model {}: {e}", sources.model.describe())))?;

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
