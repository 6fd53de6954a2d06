//! The PolicyEnforcer's tests: the default policy's roles, per-org lines, models that
//! look at the namespace and path, membership polling and refused reloads.

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
        model: ModelSource::File(dir.join("model.conf")),
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

async fn may(addr: &Addr<PolicyEnforcer>, who: &str, org: u64, object: &str, action: &str) -> bool {
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
        model: ModelSource::File(dir.path().join("model.conf")),
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
    assert_eq!(good.policies, 12);

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

/// The README's "More examples of policy lines", read from the README itself, do what
/// their comments say.
#[actix_rt::test]
async fn the_readme_examples_do_what_they_say() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("More examples of policy lines:")
        .expect("the README's examples");
    let block = &readme[start..];
    let block = &block[block.find("```csv\n").expect("a csv block") + 7..];
    let lines = &block[..block.find("```").expect("the block's end")];
    let dir = tempfile::tempdir().unwrap();
    let (addr, members) = enforcer(dir.path()).await;
    std::fs::write(dir.path().join("policy.csv"), format!("{POLICY}{lines}")).unwrap();
    members.set(3, "erin", "auditor").await.unwrap();
    members.set(2, "bob", "member").await.unwrap();
    members.set(3, "sam", "supporter").await.unwrap();
    members.set(4, "sam", "supporter").await.unwrap();
    addr.send(Reload).await.unwrap().unwrap();
    // the auditor of org 3 reads everything, Secrets included, and changes nothing
    for object in ["core:secrets", "core:pods", "apps:deployments"] {
        assert!(may(&addr, "erin", 3, object, "get").await, "{object}");
        assert!(may(&addr, "erin", 3, object, "list").await, "{object}");
    }
    assert!(!may(&addr, "erin", 3, "core:pods", "delete").await);
    assert!(!may(&addr, "erin", 3, "core:pods/exec", "connect").await);
    assert!(
        !may(&addr, "erin", 4, "core:pods", "get").await,
        "org 3 only"
    );
    // members exec into pods of org 2, not elsewhere
    assert!(may(&addr, "bob", 2, "core:pods/exec", "connect").await);
    assert!(!may(&addr, "bob", 1, "core:pods/exec", "connect").await);
    // nobody but admins touches RBAC objects
    assert!(!may(&addr, "bob", 1, "rbac.authorization.k8s.io:roles", "get").await);
    assert!(
        may(
            &addr,
            "alice",
            1,
            "rbac.authorization.k8s.io:roles",
            "delete"
        )
        .await
    );
    // supporters are members everywhere, denies included, and create ConfigMaps in org 3
    assert!(may(&addr, "sam", 4, "core:pods", "list").await);
    assert!(!may(&addr, "sam", 4, "core:secrets", "get").await);
    assert!(may(&addr, "sam", 3, "core:configmaps", "create").await);
    assert!(!may(&addr, "sam", 4, "core:configmaps", "create").await);
}
